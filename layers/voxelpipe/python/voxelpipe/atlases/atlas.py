"""An atlas: a label map in a template's space, its label table, and where it comes from.

Plain data and parsing only (no nibabel): the API and the registry check label tables with it.

Label table (CSV, UTF-8, header row required, `#` starts a comment line):

    index,name,region
    48,Left_Hippocampus,hippocampus_left
    101,Left_ACgG_anterior_cingulate_gyrus,

* index: the label's value in the label map (an integer 1..32767; 0 is background);
* name: the atlas's own name of the label (non-empty, unique);
* region: one of `REGIONS` (the regions the `regional` analysis reports), or empty: several labels
  may form one region (the gyri of a lobe); a label without a region is reported by its name only.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final, Literal

from voxelpipe.csv_tables import read_table

__all__ = [
    "MAX_LABEL",
    "REGIONS",
    "Atlas",
    "AtlasError",
    "AtlasLabel",
    "Region",
    "atlas_from_files",
    "label_table_csv",
    "parse_label_table",
]

MAX_LABEL: Final = 32767
MAX_TABLE_BYTES: Final = 1 << 20
# The tissue a region's volume counts: its grey matter, its parenchyma (grey and white: the deep
# nuclei whose T1 intensity lies between GM and WM, so a GM-only count would miss part of them),
# or its CSF (the ventricles).
RegionTissue = Literal["gm", "parenchyma", "csf"]


@dataclass(frozen=True)
class Region:
    key: str  # e.g. "hippocampus_left"
    structure: str  # e.g. "hippocampus"
    side: Literal["left", "right"]
    tissue: RegionTissue


def _regions() -> dict[str, Region]:
    structures: dict[str, RegionTissue] = {
        "hippocampus": "gm",
        "amygdala": "gm",
        "thalamus": "parenchyma",
        "caudate": "gm",
        "putamen": "gm",
        "pallidum": "parenchyma",
        "lateral_ventricle": "csf",
        "frontal_gm": "gm",
        "temporal_gm": "gm",
        "parietal_gm": "gm",
        "occipital_gm": "gm",
    }
    regions: dict[str, Region] = {}
    for structure, tissue in structures.items():
        for side in ("left", "right"):
            key = f"{structure}_{side}"
            regions[key] = Region(key, structure, side, tissue)
    return regions


# The regions `regional` reports, by key: left and right of each structure.
REGIONS: Final[Mapping[str, Region]] = _regions()
STRUCTURES: Final = tuple(dict.fromkeys(region.structure for region in REGIONS.values()))
# Region numbers in regional's regions.nii.gz: REGIONS' order, from 1.
REGION_NUMBERS: Final[Mapping[str, int]] = {key: number for number, key in enumerate(REGIONS, start=1)}
# How each structure is painted wherever regions are shown (the previews, the viewer's legend, the
# report's overlays): a hue per structure (RGB), the right side a shade darker.
STRUCTURE_COLOURS: Final[Mapping[str, tuple[int, int, int]]] = {
    "hippocampus": (255, 210, 0),
    "amygdala": (255, 120, 0),
    "thalamus": (0, 170, 255),
    "caudate": (120, 200, 255),
    "putamen": (255, 60, 160),
    "pallidum": (80, 80, 255),
    "lateral_ventricle": (120, 0, 200),
    "frontal_gm": (60, 200, 90),
    "temporal_gm": (240, 70, 60),
    "parietal_gm": (0, 200, 200),
    "occipital_gm": (200, 200, 200),
}
RIGHT_SHADE: Final = 0.7


def region_colour(region: Region) -> tuple[int, int, int]:
    """The region's colour (RGB, 0-255), truncated as an image's 8-bit channels are."""
    shade = RIGHT_SHADE if region.side == "right" else 1.0
    red, green, blue = STRUCTURE_COLOURS[region.structure]
    return (int(red * shade + 1e-6), int(green * shade + 1e-6), int(blue * shade + 1e-6))


class AtlasError(ValueError):
    """An atlas or its label table is not in the documented form; the message says where."""


@dataclass(frozen=True)
class AtlasLabel:
    index: int
    name: str
    region: str | None = None


@dataclass(frozen=True)
class Atlas:
    """An atlas's identity and labels; its label map is `label_map` (NIfTI bytes, integer labels)
    in the template space `space`."""

    name: str
    version: str
    space: str  # the template it was drawn on, e.g. "MNI152NLin2009aSym"
    labels: Mapping[int, AtlasLabel]
    label_map: bytes
    licence: str
    citation: str
    commercial_use: bool  # whether its licence allows use in a commercial service
    notes: tuple[str, ...] = field(default_factory=tuple)

    def provenance(self) -> dict[str, object]:
        return {
            "atlas": self.name,
            "version": self.version,
            "space": self.space,
            "licence": self.licence,
            "commercial_use": self.commercial_use,
            "citation": self.citation,
        }

    def region_labels(self) -> dict[str, tuple[int, ...]]:
        """Each region the atlas maps, with the label values that form it."""
        found: dict[str, list[int]] = {}
        for label in self.labels.values():
            if label.region is not None:
                found.setdefault(label.region, []).append(label.index)
        return {key: tuple(sorted(found[key])) for key in REGIONS if key in found}


_HEADER: Final = ("index", "name", "region")
_NAME = re.compile(r"\S(.{0,126}\S)?")


def parse_label_table(text: str) -> dict[int, AtlasLabel]:
    """The labels of a label table in the documented CSV form; raises AtlasError naming the line."""
    header_line, header, records = read_table(text, "label table", MAX_TABLE_BYTES, AtlasError)
    if header[:2] != ["index", "name"] or any(h not in _HEADER for h in header):
        raise AtlasError(
            f"line {header_line}: the header must be index,name[,region], not {','.join(header)}"
        )
    labels: dict[int, AtlasLabel] = {}
    names: set[str] = set()
    for number, cells in records:
        row = dict(zip(header, cells, strict=True))
        try:
            index = int(row["index"])
        except ValueError:
            raise AtlasError(f"line {number}: index {row['index']!r} is not an integer") from None
        if not 1 <= index <= MAX_LABEL:
            raise AtlasError(f"line {number}: index {index} is not in 1..{MAX_LABEL} (0 is background)")
        if index in labels:
            raise AtlasError(f"line {number}: index {index} appears twice")
        name = row["name"]
        if not _NAME.fullmatch(name):
            raise AtlasError(f"line {number}: name must be 1-128 characters, not blank")
        if name in names:
            raise AtlasError(f"line {number}: name {name!r} appears twice")
        region = row.get("region") or None
        if region is not None and region not in REGIONS:
            raise AtlasError(f"line {number}: region {region!r} is not one of {', '.join(REGIONS)}")
        names.add(name)
        labels[index] = AtlasLabel(index, name, region)
    if not labels:
        raise AtlasError("label table has a header but no labels")
    return labels


def label_table_csv(labels: Mapping[int, AtlasLabel]) -> str:
    """`labels` in the documented CSV form (parse_label_table reads it back)."""
    rows = ["index,name,region"]
    for index in sorted(labels):
        label = labels[index]
        name = f'"{label.name}"' if "," in label.name else label.name
        rows.append(f"{index},{name},{label.region or ''}")
    return "\n".join(rows) + "\n"


def atlas_from_files(
    label_map: bytes,
    label_table: str,
    *,
    name: str,
    version: str,
    space: str,
    licence: str,
    citation: str,
    commercial_use: bool,
    notes: tuple[str, ...] = (),
) -> Atlas:
    """An atlas from its two files as stored (a registered atlas: voxelpipe.references): the label
    map's NIfTI bytes, as they are, and its label table's text (parse_label_table; AtlasError)."""
    return Atlas(
        name=name,
        version=version,
        space=space,
        labels=parse_label_table(label_table),
        label_map=label_map,
        licence=licence,
        citation=citation,
        commercial_use=commercial_use,
        notes=notes,
    )
