"""The `longitudinal` analysis on a real brain pair at 3 mm (tests/fixtures/longitudinal.py: the
bundled MNI152 T1, each scan with its own head position, bias field and Rician noise): a
scan-rescan pair reads ~0 (closer than volume subtraction: each scan's own brain mask, tissue-seg's
mask function), a known 2 % whole-brain shrink is read within 0.3 pp, and swapping the two scans
gives the opposite change. Three runs on scans built once (module fixtures). The 1 and 2 mm figures,
the hippocampus and the comparison with subtraction on every pair are
bench/longitudinal_accuracy.py's (docs/analyses.md, "longitudinal").
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pytest

from tests.fixtures.longitudinal import Position, acquire, anatomy, known_change, no_change
from voxelpipe.analyses import AnalysisInput, AnalysisOutput
from voxelpipe.analyses.catalogue import TISSUE_SEG_MASK_FILE, PriorStudy
from voxelpipe.analyses.longitudinal import run_longitudinal
from voxelpipe.nifti import to_nifti_bytes
from voxelpipe.volume import new_image, voxel_data, voxel_sizes

SPACING_MM = 3.0  # a 3 mm scanner grid keeps the three runs cheap; the 1 and 2 mm figures are the bench's
RESCAN_PCT = 0.3
SHRINK_PP = 0.3


@dataclasses.dataclass(frozen=True)
class Scan:
    image: Any
    mask: np.ndarray


def _scan(anat, change, position: Position, bias_flip: int | None, seed: int) -> Scan:
    from voxelpipe.segmentation import brain_mask

    image, _, _ = acquire(anat, change, position, spacing_mm=SPACING_MM, bias_flip=bias_flip, seed=seed)
    mask = brain_mask(voxel_data(image), [float(z) for z in voxel_sizes(image.affine)], device="cpu").mask
    return Scan(image, np.asarray(mask, dtype=bool))


@pytest.fixture(scope="module")
def scans() -> dict[str, Any]:
    anat = anatomy()
    shrink = known_change(anat, "brain", -2.0)
    return {
        "baseline": _scan(anat, no_change(), Position(), None, 1),
        "rescan": _scan(anat, no_change(), Position((3.0, -2.0, 4.0), (4.0, -3.0, 2.0)), 0, 2),
        "shrunk": _scan(anat, shrink, Position((-2.0, 3.0, 1.0), (-3.0, 2.0, 5.0)), 1, 3),
        "true_pct": 100 * (shrink.true_ratios["brain"] - 1),
    }


def _run(baseline: Scan, followup: Scan) -> dict[str, Any]:
    seg = AnalysisOutput(
        measures={},
        artifacts={
            TISSUE_SEG_MASK_FILE: to_nifti_bytes(
                new_image(followup.mask.astype(np.uint8), followup.image.affine), compress=True
            )
        },
    )
    prior = PriorStudy(study_id="s-0", image=baseline.image, brain_mask=baseline.mask, interval_years=2.0)
    inp = AnalysisInput(
        image=followup.image,
        original_orientation=("R", "A", "S"),
        parameters={},
        requirements={"tissue-seg": seg},
        prior=prior,
    )
    measures = run_longitudinal(inp).measures
    assert measures["prior_study_id"] == "s-0" and measures["method"] == "jacobian-integration"
    brain: dict[str, Any] = measures["regions"]["brain"]
    assert set(measures["regions"]) == {"brain"}  # the prior ran no regional
    assert brain["paired_rate_pct_per_year"] == pytest.approx(brain["paired_change_pct"] / 2, abs=1e-3)
    return brain


@pytest.fixture(scope="module")
def shrunk(scans) -> dict[str, Any]:
    return _run(scans["baseline"], scans["shrunk"])


def test_a_scan_rescan_pair_reads_no_change(scans):
    brain = _run(scans["baseline"], scans["rescan"])
    assert abs(brain["paired_change_pct"]) <= RESCAN_PCT, brain
    assert abs(brain["paired_change_pct"]) < abs(brain["subtraction_change_pct"]), brain


def test_a_known_shrink_is_read(scans, shrunk):
    # (Subtraction's error on one 3 mm pair can be as small by luck: the comparison is the bench's.)
    error = shrunk["paired_change_pct"] - scans["true_pct"]
    assert abs(error) <= SHRINK_PP, shrunk


def test_swapping_the_scans_gives_the_opposite_change(scans, shrunk):
    back = _run(scans["shrunk"], scans["baseline"])
    # follow-up/baseline one way times the other way is 1: -2 % one way is +2.04 % the other.
    product = (1 + shrunk["paired_change_pct"] / 100) * (1 + back["paired_change_pct"] / 100)
    assert product == pytest.approx(1.0, abs=0.002)
