"""stand-in (issue 18: M owns the real method): the `longitudinal` analysis's measures from the
difference of the two studies' mask and region volumes, in the agreed shape, so that the wiring
(dispatch's prior pin, RunAnalysis's loading, the timeline) can be built and tested before M's
halfway-space Jacobian integration lands. The lead replaces this module with M's.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from voxelpipe.analyses.catalogue import (
    REGIONAL_LABELS_FILE,
    TISSUE_SEG_MASK_FILE,
    AnalysisInput,
    AnalysisOutput,
)
from voxelpipe.nifti import load_nifti

METHOD = "jacobian-integration"


def _voxel_ml(affine: Any) -> float:
    return float(abs(np.linalg.det(np.asarray(affine, dtype=np.float64)[:3, :3]))) / 1000.0


def _change(baseline: float, followup: float, interval: float | None) -> dict[str, float | None]:
    pct = 100.0 * (followup - baseline) / baseline if baseline > 0 else None
    rate = pct / interval if pct is not None and interval else None
    return {
        "baseline_ml": round(baseline, 4),
        "followup_ml": round(followup, 4),
        "paired_change_pct": pct,
        "paired_rate_pct_per_year": rate,
        "subtraction_change_pct": pct,
        "subtraction_rate_pct_per_year": rate,
    }


def run_longitudinal(inp: AnalysisInput) -> AnalysisOutput:
    prior = inp.prior
    if prior is None:
        return AnalysisOutput(
            measures={
                "prior_study_id": None,
                "interval_years": None,
                "method": METHOD,
                "status": "no_prior",
                "reason": "the subject has no earlier completed study that ran tissue-seg",
                "regions": {},
            }
        )
    seg = inp.requirements["tissue-seg"]
    mask = load_nifti(seg.artifacts[TISSUE_SEG_MASK_FILE])
    regions: dict[str, Any] = {
        "brain": _change(
            float(np.count_nonzero(prior.brain_mask)) * _voxel_ml(prior.image.affine),
            float(np.count_nonzero(np.asarray(mask.dataobj))) * _voxel_ml(mask.affine),
            prior.interval_years,
        )
    }
    regional = inp.requirements.get("regional")
    if prior.regions is not None and regional is not None and REGIONAL_LABELS_FILE in regional.artifacts:
        current = load_nifti(regional.artifacts[REGIONAL_LABELS_FILE])
        values = np.asarray(current.dataobj)
        names = dict(prior.region_names)
        for number, name in sorted(names.items()):
            regions[name] = _change(
                float(np.count_nonzero(prior.regions == number)) * _voxel_ml(prior.image.affine),
                float(np.count_nonzero(values == number)) * _voxel_ml(current.affine),
                prior.interval_years,
            )
    return AnalysisOutput(
        measures={
            "prior_study_id": prior.study_id,
            "interval_years": prior.interval_years,
            "method": METHOD,
            "status": "ok",
            "regions": regions,
        }
    )
