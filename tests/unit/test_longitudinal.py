"""The longitudinal analysis's pure pieces: the rigid transform's half, the measures' shape and
rates, the answer without a prior, the catalogue entry. The method on a real brain pair is
tests/integration/test_longitudinal.py; its accuracy at 1 mm bench/longitudinal_accuracy.py."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from voxelpipe.analyses import CATALOGUE, AnalysisInput, resolve
from voxelpipe.analyses.longitudinal import METHOD, NO_PRIOR, region_measures, run_longitudinal
from voxelpipe.longitudinal import RigidFit, half_of, halfway_grid
from voxelpipe.registration.images import array_to_sitk
from voxelpipe.volume import new_image


def _rigid(rotvec: tuple[float, float, float], translation: tuple[float, float, float]) -> RigidFit:
    return RigidFit(Rotation.from_rotvec(rotvec).as_matrix(), np.asarray(translation, dtype=np.float64))


@pytest.mark.parametrize(
    ("rotvec", "translation"),
    [
        ((0.05, -0.08, 0.03), (4.0, -3.0, 6.0)),
        ((0.0, 0.0, 0.0), (2.0, 0.0, -1.0)),
        ((0.3, 0.1, -0.2), (0, 0, 0)),
    ],
)
def test_the_half_of_a_rigid_transform_applied_twice_is_the_transform(rotvec, translation):
    rigid = _rigid(rotvec, translation)
    half = half_of(rigid)
    points = np.random.default_rng(0).normal(0, 80, (20, 3))
    np.testing.assert_allclose(half.apply(half.apply(points)), rigid.apply(points), atol=1e-9)
    assert half.rotation_deg() == pytest.approx(rigid.rotation_deg() / 2)
    # H^-1 undoes H.
    back = half.inverse()
    np.testing.assert_allclose(back.apply(half.apply(points)), points, atol=1e-9)


def test_the_halfway_grid_holds_both_brains():
    mask = np.zeros((30, 30, 30), np.float32)
    mask[8:22, 8:22, 8:22] = 1
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    image = array_to_sitk(mask, affine)
    rigid = _rigid((0.0, 0.0, 0.2), (10.0, -6.0, 4.0))
    grid = halfway_grid(image, image, half_of(rigid), 1.5, 5.0)
    assert grid.GetSpacing() == (1.5, 1.5, 1.5)
    assert grid.GetDirection() == (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
    low = np.asarray(grid.GetOrigin())
    high = low + 1.5 * (np.asarray(grid.GetSize()) - 1)
    corners = np.asarray([image.TransformIndexToPhysicalPoint(c) for c in [(8, 8, 8), (21, 21, 21)]])
    for points in (half_of(rigid).apply(corners), half_of(rigid).inverse().apply(corners)):
        assert (points >= low).all() and (points <= high).all()


def test_a_region_reports_paired_and_subtracted_change_with_annual_rates():
    row = region_measures(0.98, 1000.0, 1012.0, 2.0)
    assert row == {
        "baseline_ml": 1000.0,
        "followup_ml": 1012.0,
        "paired_change_pct": -2.0,
        "paired_rate_pct_per_year": -1.0,
        "subtraction_change_pct": 1.2,
        "subtraction_rate_pct_per_year": 0.6,
    }
    unknown = region_measures(0.99, 10.0, None, None)
    assert unknown["paired_change_pct"] == -1.0
    assert unknown["paired_rate_pct_per_year"] is None
    assert unknown["subtraction_change_pct"] is None and unknown["followup_ml"] is None
    assert region_measures(1.01, 10.0, 10.0, 0.0)["paired_rate_pct_per_year"] is None


def test_without_an_earlier_study_it_answers_with_a_reason():
    inp = AnalysisInput(
        image=new_image(np.zeros((4, 4, 4), np.float32), np.eye(4)),
        original_orientation=("R", "A", "S"),
        parameters={},
    )
    measures = run_longitudinal(inp).measures
    assert measures == {
        "prior_study_id": None,
        "interval_years": None,
        "method": METHOD,
        "regions": {},
        "reason": NO_PRIOR,
    }
    with pytest.raises(ValueError, match="unknown longitudinal parameters"):
        run_longitudinal(
            AnalysisInput(image=inp.image, original_orientation=("R", "A", "S"), parameters={"x": 1})
        )


def test_the_catalogue_runs_it_after_tissue_seg_and_after_regional_when_the_study_runs_it():
    assert CATALOGUE["longitudinal"].describe()["uses"] == ["regional"]
    assert [a.name for a in resolve(["longitudinal"])] == ["tissue-seg", "longitudinal"]
    ordered = [a.name for a in resolve(["longitudinal", "regional"])]
    assert ordered.index("regional") < ordered.index("longitudinal")


def test_the_measures_name_the_baseline_regions_and_subtract_each_scan_s_own_volumes():
    from voxelpipe.analyses.catalogue import PriorStudy
    from voxelpipe.analyses.longitudinal import longitudinal_measures
    from voxelpipe.atlases import REGION_NUMBERS
    from voxelpipe.longitudinal import PairedChange

    left, right = REGION_NUMBERS["hippocampus_left"], REGION_NUMBERS["hippocampus_right"]
    baseline_regions = np.zeros((10, 10, 10), np.uint8)
    baseline_regions[:2] = left  # 200 voxels of 8 uL: 1.6 mL
    baseline_regions[2:3] = right
    followup_regions = np.zeros((10, 10, 10), np.uint8)
    followup_regions[:2, :9] = left  # 180 voxels
    prior = PriorStudy(
        study_id="s-0",
        image=new_image(np.zeros((10, 10, 10), np.float32), np.diag([2.0, 2.0, 2.0, 1.0])),
        brain_mask=np.ones((10, 10, 10), bool),
        regions=baseline_regions,
        region_names={left: "hippocampus_left", right: "hippocampus_right", 99: "absent"},
        interval_years=0.5,
    )
    followup = new_image(np.zeros((10, 10, 10), np.float32), np.diag([2.0, 2.0, 2.0, 1.0]))
    mask = np.ones((10, 10, 10), bool)
    mask[0] = False
    change = PairedChange(
        ratios={"brain": 0.99, left: 0.97, right: 1.0},
        forward={},
        backward={},
        rigid_rotation_deg=0.0,
        rigid_translation_mm=0.0,
        grid_shape=(1, 1, 1),
        grid_spacing_mm=2.0,
    )
    measures = longitudinal_measures(prior, followup, mask, followup_regions, change)
    assert measures["prior_study_id"] == "s-0" and measures["interval_years"] == 0.5
    assert list(measures["regions"]) == ["brain", "hippocampus_left", "hippocampus_right"]  # 99: no voxel
    brain = measures["regions"]["brain"]
    assert (brain["baseline_ml"], brain["followup_ml"]) == (8.0, 7.2)
    assert brain["paired_change_pct"] == -1.0 and brain["paired_rate_pct_per_year"] == -2.0
    assert brain["subtraction_change_pct"] == -10.0
    hippocampus = measures["regions"]["hippocampus_left"]
    assert (hippocampus["baseline_ml"], hippocampus["followup_ml"]) == (1.6, 1.44)
    assert hippocampus["paired_change_pct"] == -3.0 and hippocampus["subtraction_change_pct"] == -10.0
    # No voxel of the right hippocampus in the follow-up's map: no subtraction, not -100 %.
    assert measures["regions"]["hippocampus_right"]["followup_ml"] is None
    assert measures["regions"]["hippocampus_right"]["subtraction_change_pct"] is None
