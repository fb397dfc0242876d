"""The viewer's legends paint labels as the analyses' previews do, and number them as the maps do."""

from __future__ import annotations

import numpy as np

from voxelpipe.analyses import tissue_seg
from voxelpipe.analyses.regional import region_palette
from voxelpipe.atlases import REGION_NUMBERS
from voxelpipe.tissues import LABELS
from voxelpipe.viewer.legends import regional_legend, tissue_legend


def test_tissue_legend_is_tissue_seg_s_labels_in_its_preview_colours():
    legend = tissue_legend()
    assert [(e.index, e.name) for e in legend] == [(1, "CSF"), (2, "Grey matter"), (3, "White matter")]
    assert {e.index for e in legend} == {v for k, v in LABELS.items() if k != "background"}
    palette = tissue_seg._COLOURS.astype(np.uint8)
    for entry in legend:
        assert entry.colour == tuple(int(c) for c in palette[entry.index])
    assert legend[0].hex == "#2878ff"


def test_regional_legend_numbers_and_colours_are_regional_s():
    palette = region_palette().astype(np.uint8)
    legend = regional_legend()
    assert len(legend) == len(REGION_NUMBERS)
    for entry in legend:
        assert entry.colour == tuple(int(c) for c in palette[entry.index]), entry


def test_regional_legend_keeps_the_regions_the_study_mapped():
    legend = regional_legend(["hippocampus_left", "hippocampus_right"])
    assert [e.name for e in legend] == ["hippocampus left", "hippocampus right"]
    assert legend[1].colour == (178, 147, 0)  # the right side a shade darker
