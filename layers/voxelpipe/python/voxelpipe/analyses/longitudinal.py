"""stand-in (issue 18: M owns the real method): the `longitudinal` analysis's measures in the
agreed shape, so that the wiring (dispatch's prior pin, RunAnalysis's loading, the timeline) can be
built and tested before M's halfway-space Jacobian integration lands. The lead replaces this module
with M's. Whole brain "paired": the ratio of the two scans' partial-volume brain volumes (intensity
over the brain's median, clipped to 0..1, in the mask grown by two voxels: sub-voxel boundary
shifts count, as a binary mask's do not); "subtraction" and regions: binary mask and label volumes.
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
from voxelpipe.volume import canonical

METHOD = "jacobian-integration"


def _voxel_ml(affine: Any) -> float:
    return float(abs(np.linalg.det(np.asarray(affine, dtype=np.float64)[:3, :3]))) / 1000.0


def _pct(baseline: float, followup: float) -> float | None:
    return 100.0 * (followup - baseline) / baseline if baseline > 0 else None


def _change(
    baseline: float, followup: float, interval: float | None, paired: float | None = None
) -> dict[str, float | None]:
    subtraction = _pct(baseline, followup)
    paired = subtraction if paired is None else paired
    return {
        "baseline_ml": round(baseline, 4),
        "followup_ml": round(followup, 4),
        "paired_change_pct": paired,
        "paired_rate_pct_per_year": paired / interval if paired is not None and interval else None,
        "subtraction_change_pct": subtraction,
        "subtraction_rate_pct_per_year": subtraction / interval
        if subtraction is not None and interval
        else None,
    }


def _partial_volume_ml(image: Any, mask: Any) -> float:
    from scipy import ndimage

    data = np.asarray(image.dataobj, dtype=np.float64)
    inside = mask & (data > 0)
    level = float(np.median(data[inside])) if inside.any() else 0.0
    if level <= 0:
        return 0.0
    grown = ndimage.binary_dilation(mask, iterations=2)
    return float(np.clip(data[grown] / level, 0.0, 1.0).sum()) * _voxel_ml(image.affine)


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
    current_mask = np.asarray(canonical(mask).dataobj) > 0
    if current_mask.shape != inp.image.shape[:3]:
        raise ValueError("tissue-seg's brain mask is not on the volume's grid")
    paired = _pct(
        _partial_volume_ml(prior.image, prior.brain_mask), _partial_volume_ml(inp.image, current_mask)
    )
    regions: dict[str, Any] = {
        "brain": _change(
            float(np.count_nonzero(prior.brain_mask)) * _voxel_ml(prior.image.affine),
            float(np.count_nonzero(current_mask)) * _voxel_ml(mask.affine),
            prior.interval_years,
            paired,
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
