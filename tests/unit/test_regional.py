"""regional's arithmetic on small arrays: region numbers from atlas labels, tissue-weighted volumes,
asymmetry, fractions of TIV, the CSV; the catalogue's registration outputs."""

from __future__ import annotations

import numpy as np
import pytest

from voxelpipe.analyses.catalogue import REGISTRATION_FILES
from voxelpipe.analyses.regional import (
    REGION_NUMBERS,
    region_map,
    region_palette,
    regional_measures,
    regions_csv,
)
from voxelpipe.atlases import REGIONS, Atlas, AtlasLabel
from voxelpipe.registration import TRANSFORM_FILES


def atlas(labels: dict[int, AtlasLabel]) -> Atlas:
    return Atlas("tiny", "1", "test", labels, b"", "test licence", "test citation", commercial_use=True)


TINY = atlas(
    {
        5: AtlasLabel(5, "L hippo", "hippocampus_left"),
        6: AtlasLabel(6, "R hippo", "hippocampus_right"),
        7: AtlasLabel(7, "L thal", "thalamus_left"),
        8: AtlasLabel(8, "L vent", "lateral_ventricle_left"),
        9: AtlasLabel(9, "L SFG", "frontal_gm_left"),
        10: AtlasLabel(10, "L MFG", "frontal_gm_left"),
        11: AtlasLabel(11, "cingulate"),  # in no region
    }
)


def test_region_map_joins_labels_into_regions_and_drops_others() -> None:
    labels = np.array([[[0, 5, 6, 9, 10, 11, 40]]])
    regions = region_map(labels, TINY)
    n = REGION_NUMBERS
    assert regions.tolist() == [[[0, n["hippocampus_left"], n["hippocampus_right"], n["frontal_gm_left"],
                                  n["frontal_gm_left"], 0, 0]]]  # fmt: skip
    assert TINY.region_labels()["frontal_gm_left"] == (9, 10)


def test_volumes_count_each_region_s_own_tissue() -> None:
    n = REGION_NUMBERS
    regions = np.zeros((4, 1, 1), np.uint8)
    regions[:, 0, 0] = [
        n["hippocampus_left"],
        n["hippocampus_right"],
        n["thalamus_left"],
        n["lateral_ventricle_left"],
    ]
    probabilities = {
        "gm": np.array([0.8, 0.6, 0.5, 0.1], np.float32).reshape(4, 1, 1),
        "wm": np.array([0.1, 0.2, 0.4, 0.0], np.float32).reshape(4, 1, 1),
        "csf": np.array([0.1, 0.2, 0.1, 0.9], np.float32).reshape(4, 1, 1),
    }
    voxel_ml = 2.0
    measures = regional_measures(regions, probabilities, voxel_ml, TINY.region_labels())
    assert measures["tiv_ml"] == pytest.approx(8.0)
    got = measures["regions"]
    assert got["hippocampus_left"]["volume_ml"] == pytest.approx(1.6)  # GM only
    assert got["hippocampus_right"]["volume_ml"] == pytest.approx(1.2)
    assert got["thalamus_left"]["volume_ml"] == pytest.approx(1.8)  # GM + WM
    assert got["lateral_ventricle_left"]["volume_ml"] == pytest.approx(1.8)  # CSF
    assert got["hippocampus_left"]["label_ml"] == pytest.approx(2.0)
    assert got["hippocampus_left"]["fraction_of_tiv"] == pytest.approx(0.2)
    assert got["frontal_gm_left"]["volume_ml"] == 0.0  # mapped by the atlas, absent here
    assert set(got) == set(TINY.region_labels())
    hippocampus = measures["structures"]["hippocampus"]
    assert hippocampus["total_ml"] == pytest.approx(2.8)
    assert hippocampus["asymmetry"] == pytest.approx((1.6 - 1.2) / 1.4, abs=1e-4)
    assert "thalamus" not in measures["structures"]  # one side only: no asymmetry
    csv = regions_csv(got).decode().splitlines()
    assert csv[0].startswith("number,region,structure,side,tissue,volume_ml")
    assert f"{n['hippocampus_left']},hippocampus_left,hippocampus,left,gm,1.6,2.0,0.2" in csv


def test_palette_and_numbers_cover_every_region() -> None:
    palette = region_palette()
    assert palette.shape == (len(REGIONS) + 1, 3) and not palette[0].any()
    assert sorted(REGION_NUMBERS.values()) == list(range(1, len(REGIONS) + 1))
    left, right = palette[REGION_NUMBERS["hippocampus_left"]], palette[REGION_NUMBERS["hippocampus_right"]]
    assert (left > right).any() and np.allclose(right, left * 0.7)


def test_catalogue_names_the_registration_s_files() -> None:
    assert REGISTRATION_FILES == TRANSFORM_FILES
