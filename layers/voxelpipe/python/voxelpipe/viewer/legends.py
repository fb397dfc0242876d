"""What each label map's values mean, and the colour the viewer paints them: plain data, no numpy.

The colours are the one palette of each map (voxelpipe.tissues.COLOURS, the atlases'
STRUCTURE_COLOURS), which the analyses' previews and the report paint with too, so they agree.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from voxelpipe.atlases.atlas import REGION_NUMBERS, REGIONS, region_colour
from voxelpipe.tissues import COLOURS, LABELS, NAMES, TISSUES


@dataclass(frozen=True)
class LegendEntry:
    index: int  # the voxel value
    name: str
    colour: tuple[int, int, int]  # RGB, 0-255

    @property
    def hex(self) -> str:
        return "#{:02x}{:02x}{:02x}".format(*self.colour)


def tissue_legend() -> list[LegendEntry]:
    """The legend of tissue-seg's labels.nii.gz: 1 CSF, 2 GM, 3 WM, in their preview colours."""
    return [LegendEntry(LABELS[tissue], NAMES[tissue], COLOURS[tissue]) for tissue in TISSUES]


def regional_legend(mapped: Iterable[str] | None = None) -> list[LegendEntry]:
    """The legend of regions.nii.gz: every region, or those `mapped` (results.json's regions)."""
    keep = None if mapped is None else set(mapped)
    return [
        LegendEntry(number, key.replace("_", " "), region_colour(REGIONS[key]))
        for key, number in REGION_NUMBERS.items()
        if keep is None or key in keep
    ]
