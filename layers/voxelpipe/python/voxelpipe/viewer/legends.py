"""What each label map's values mean, and the colour the viewer paints them: plain data, no numpy.

The colours are the ones the analyses' own overlay previews use (tissue-seg's and regional's
palettes; tests/unit/test_viewer_legends.py holds them equal), so the viewer and the PNGs agree.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from voxelpipe.atlases.atlas import REGIONS
from voxelpipe.tissues import LABELS

# tissue-seg's labels.nii.gz: 1 CSF, 2 GM, 3 WM (voxelpipe.tissues.LABELS).
TISSUE_NAMES: Mapping[str, str] = {"csf": "CSF", "gm": "Grey matter", "wm": "White matter"}
TISSUE_COLOURS: Mapping[str, tuple[int, int, int]] = {
    "csf": (40, 120, 255),
    "gm": (40, 200, 80),
    "wm": (255, 210, 40),
}
# regional's regions.nii.gz: a hue per structure, the right side a shade darker (0.7).
STRUCTURE_COLOURS: Mapping[str, tuple[int, int, int]] = {
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
RIGHT_SHADE = 0.7
FALLBACK_COLOUR = (255, 0, 255)  # a region of a structure this table does not know


@dataclass(frozen=True)
class LegendEntry:
    index: int  # the voxel value
    name: str
    colour: tuple[int, int, int]  # RGB, 0-255

    @property
    def hex(self) -> str:
        return "#{:02x}{:02x}{:02x}".format(*self.colour)


def tissue_legend() -> list[LegendEntry]:
    return [
        LegendEntry(LABELS[tissue], TISSUE_NAMES[tissue], TISSUE_COLOURS[tissue]) for tissue in TISSUE_NAMES
    ]


def region_colour(structure: str, side: str | None) -> tuple[int, int, int]:
    base = STRUCTURE_COLOURS.get(structure, FALLBACK_COLOUR)
    shade = RIGHT_SHADE if side == "right" else 1.0
    # Truncated, as the previews' float32 palette is cast to uint8 (170 * 0.7 is 119 there).
    return (int(base[0] * shade + 1e-6), int(base[1] * shade + 1e-6), int(base[2] * shade + 1e-6))


def region_numbers() -> dict[str, int]:
    """regions.nii.gz's values: REGIONS' order, from 1 (as voxelpipe.analyses.regional numbers them)."""
    return {key: number for number, key in enumerate(REGIONS, start=1)}


def regional_legend(mapped: Iterable[str] | None = None) -> list[LegendEntry]:
    """The legend of regions.nii.gz: every region, or those `mapped` (results.json's regions)."""
    keep = None if mapped is None else set(mapped)
    return [
        LegendEntry(number, key.replace("_", " "), region_colour(REGIONS[key].structure, REGIONS[key].side))
        for key, number in region_numbers().items()
        if keep is None or key in keep
    ]
