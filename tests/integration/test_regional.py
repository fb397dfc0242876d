"""The regional chain (tissue-seg -> registration -> regional, through the analyses' run functions
as RunAnalysis calls them) on a subject whose regions are known: the MNI152 template and the
default atlas moved by a known affine + smooth deformation onto a 3 mm LPS upload grid, the T1
with a bias field and Rician noise (tests/fixtures/regional.py). The 1 mm figures are
bench/regional_accuracy.py's (docs/pipeline.md, "Regional accuracy").

Why 3 mm and a milder field than the bench's (0.9-1.1, not 0.75-1.25): tissue-seg's mixture
degenerates on some 3-4 mm subjects under the stronger field (all GM, no WM: it warns). The
registration runs with the analysis's own settings (2 mm working grid): on the 4 mm working grid
tests/unit/test_registration.py uses, this chain failed on one noise seed in three (mean Dice 0.22).
About 40 s on 2 cores: two chains (the subject, then its left hippocampus shrunk).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pytest

from tests.fixtures.regional import RegionalCase, chain_input, measured_regions, regional_case, run_chain
from tests.fixtures.segmentation import dice, resample_to
from voxelpipe.analyses.regional import run_regional
from voxelpipe.analyses.registration import run_registration
from voxelpipe.atlases import REGION_NUMBERS
from voxelpipe.atlases.bundled import default_atlas
from voxelpipe.nifti import load_nifti, to_nifti_bytes
from voxelpipe.volume import new_image, reoriented

SPACING_MM = 3.0
DEGRADATION = {"bias": 0.1, "noise": 0.04}
SHRUNK = "hippocampus_left"
HIPPOCAMPI = ("hippocampus_left", "hippocampus_right")
# Measured here (seed 0): mean Dice 0.933, hippocampi 0.968 / 0.961, volume errors +14% / +17%;
# affine only 0.632, 0.642 / 0.665. Shrink: true -8.9%, measured -5.2%; right -0.5%; asymmetry
# -0.088 -> -0.136. (Another noise seed: 0.937, 0.971 / 0.964; -6.6% for the true -8.9%.)
MEAN_DICE = 0.88
HIPPOCAMPUS_DICE = 0.88


def _scores(case: RegionalCase, regional: Any) -> dict[str, dict[str, float]]:
    regions = measured_regions(regional)
    assert regions.shape == case.regions.shape  # on the upload's grid
    measured = regional.measures["regions"]
    return {
        key: {
            "dice": dice(regions == number, case.regions == number),
            "error": measured[key]["volume_ml"] / case.volumes[key]["volume_ml"] - 1,
        }
        for key, number in REGION_NUMBERS.items()
    }


@pytest.fixture(scope="module")
def base() -> dict[str, Any]:
    case = regional_case(SPACING_MM, **DEGRADATION)
    return {"case": case, "outputs": run_chain(case.t1)}


@pytest.fixture(scope="module")
def shrunk() -> dict[str, Any]:
    case = regional_case(SPACING_MM, shrink=SHRUNK, **DEGRADATION)
    return {"case": case, "outputs": run_chain(case.t1)}


def test_regions_land_on_the_moved_atlas(base: dict[str, Any]) -> None:
    scores = _scores(base["case"], base["outputs"]["regional"])
    mean_dice = np.mean([s["dice"] for s in scores.values()])
    assert mean_dice > MEAN_DICE, mean_dice
    for key in HIPPOCAMPI:
        assert scores[key]["dice"] > HIPPOCAMPUS_DICE, (key, scores[key])
        # the truth is the template's GM map, a population average: tissue-seg's GM is ~10% more
        # in the hippocampi at 1 mm (the bench's `seg %`), partial volume at 3 mm adds
        assert abs(scores[key]["error"]) < 0.30, (key, scores[key])


def test_left_stays_left(base: dict[str, Any]) -> None:
    """The LPS upload's left hippocampus is reported as hippocampus_left, where the truth has it."""
    case, regions = base["case"], measured_regions(base["outputs"]["regional"])
    affine = case.t1.affine
    for key, other in zip(HIPPOCAMPI, reversed(HIPPOCAMPI), strict=True):
        measured = regions == REGION_NUMBERS[key]
        assert dice(measured, case.regions == REGION_NUMBERS[other]) < 0.05
        centre = affine[:3, :3] @ np.argwhere(measured).mean(axis=0) + affine[:3, 3]
        truth = affine[:3, :3] @ np.argwhere(case.regions == REGION_NUMBERS[key]).mean(axis=0) + affine[:3, 3]
        assert np.linalg.norm(centre - truth) < 3.0, (key, centre, truth)
        assert (centre[0] < 0) == (key == "hippocampus_left"), (key, centre)  # RAS: left is -x


def test_without_the_deformable_stage_the_regions_miss(base: dict[str, Any]) -> None:
    """The thresholds above tell a registration that only gets the affine from one that works;
    the local refinement around the hippocampi then recovers those (and only those) regions."""
    case, outputs = base["case"], base["outputs"]
    upload = load_nifti(to_nifti_bytes(case.t1, compress=True))
    seg = outputs["tissue-seg"]
    affine = run_registration(chain_input(upload, {"method": "affine"}, {"tissue-seg": seg}))
    requirements = {"tissue-seg": seg, "registration": affine}
    unrefined = _scores(case, run_regional(chain_input(upload, {"local_refinement": False}, requirements)))
    assert np.mean([s["dice"] for s in unrefined.values()]) < MEAN_DICE
    assert max(unrefined[key]["dice"] for key in HIPPOCAMPI) < HIPPOCAMPUS_DICE
    refined = _scores(case, run_regional(chain_input(upload, {}, requirements)))
    assert np.mean([s["dice"] for s in refined.values()]) < MEAN_DICE  # the rest still misses
    assert min(refined[key]["dice"] for key in HIPPOCAMPI) > max(unrefined[key]["dice"] for key in HIPPOCAMPI)


def test_a_shrunk_left_hippocampus_shows_on_the_left(base: dict[str, Any], shrunk: dict[str, Any]) -> None:
    def change(key: str, volumes: Any) -> float:
        return float(volumes(shrunk)[key] / volumes(base)[key] - 1)

    def truth(run: dict[str, Any]) -> dict[str, float]:
        return {key: row["volume_ml"] for key, row in run["case"].volumes.items()}

    def measured(run: dict[str, Any]) -> dict[str, float]:
        return {key: row["volume_ml"] for key, row in run["outputs"]["regional"].measures["regions"].items()}

    true_left, true_right = change(SHRUNK, truth), change("hippocampus_right", truth)
    assert -0.12 < true_left < -0.07 and abs(true_right) < 0.01, (true_left, true_right)
    left, right = change(SHRUNK, measured), change("hippocampus_right", measured)
    # at 3 mm the chain sees about 3/4 of it (-6.5 % of -8.9 %; without the local refinement -5.2 %;
    # the bench at 1 mm: -8.7 % of -10.3 %)
    assert left < -0.05 and abs(left - true_left) < 0.04, (left, true_left)
    assert abs(right - true_right) < 0.03, (right, true_right)
    asymmetry = [
        run["outputs"]["regional"].measures["structures"]["hippocampus"]["asymmetry"]
        for run in (base, shrunk)
    ]
    assert asymmetry[1] < asymmetry[0] - 0.03, asymmetry  # left smaller than right: (L - R) falls


@pytest.mark.parametrize("variant", ["reoriented", "resampled"])
def test_an_atlas_on_another_grid_lands_the_same(base: dict[str, Any], variant: str) -> None:
    """The atlas's label map in another voxel order (an exact reordering: the same regions) or on a
    1 mm LPS grid (nearest resampled: about the same regions) lands where the bundled one does."""
    case, outputs = base["case"], base["outputs"]
    atlas_img = load_nifti(default_atlas().label_map)
    if variant == "reoriented":
        moved = reoriented(atlas_img, "PIL")
        atlas = dataclasses.replace(default_atlas(), label_map=to_nifti_bytes(moved, compress=True))
    else:
        source = np.asarray(atlas_img.affine, dtype=np.float64)
        corners = np.array(np.meshgrid(*[[0, n - 1] for n in atlas_img.shape[:3]], indexing="ij")).reshape(
            3, -1
        )
        world = source[:3, :3] @ corners + source[:3, 3:]
        low, high = world.min(axis=1), world.max(axis=1)
        grid = np.diag([-1.0, -1.0, 1.0, 1.0])  # 1 mm, LPS voxel order, over the same extent
        grid[:3, 3] = [high[0], high[1], low[2]]
        shape = tuple(int(n) for n in np.floor(high - low) + 1)
        labels = resample_to(np.asarray(atlas_img.dataobj), source, grid, shape, order=0)
        atlas = dataclasses.replace(
            default_atlas(), label_map=to_nifti_bytes(new_image(labels.astype(np.int16), grid), compress=True)
        )
    upload = load_nifti(to_nifti_bytes(case.t1, compress=True))
    requirements = {"tissue-seg": outputs["tissue-seg"], "registration": outputs["registration"]}
    regional = run_regional(chain_input(upload, {}, requirements, {"atlas": atlas}))
    bundled, other = measured_regions(outputs["regional"]), measured_regions(regional)
    if variant == "reoriented":
        np.testing.assert_array_equal(other, bundled)
    scores = _scores(case, regional)
    for key in HIPPOCAMPI:
        assert scores[key]["dice"] > HIPPOCAMPUS_DICE, (key, scores[key])
        assert dice(other == REGION_NUMBERS[key], bundled == REGION_NUMBERS[key]) > 0.85
