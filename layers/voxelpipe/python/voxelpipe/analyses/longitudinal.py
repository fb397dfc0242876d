"""The `longitudinal` analysis: the change since the subject's earlier study.

The baseline is `inp.prior` (dispatch pins it, RunAnalysis loads it: its canonical volume, its
tissue-seg brain mask and, when it ran regional, its region map). The follow-up is this study's
canonical volume with its own tissue-seg brain mask (and regional's map when the study runs it).

* Paired change (`voxelpipe.longitudinal.paired_change`): the two scans registered in a halfway
  space, the change of the whole brain (the baseline's brain mask) and of each baseline region by
  Jacobian integration, the measure symmetric in the two scans.
* Subtraction beside it: each scan's own cross-sectional volume (its brain mask's, its region
  map's label volume) and their difference, what a user would get by subtracting two reports.
  Each carries its own segmentation's error; the paired measure compares the scans directly.

Without a prior it answers, not fails: `prior_study_id` None, no regions, and a `reason`.
Rates are the change divided by the interval (percent per year, not compounded), null when the
interval is unknown or not positive.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from voxelpipe.analyses.catalogue import LONGITUDINAL as LONGITUDINAL
from voxelpipe.analyses.catalogue import (
    REGIONAL_LABELS_FILE,
    TISSUE_SEG_MASK_FILE,
    AnalysisInput,
    AnalysisOutput,
    PriorStudy,
    merged_parameters,
)
from voxelpipe.analyses.registration import on_grid
from voxelpipe.analyses.volumetrics import voxel_volume_ml
from voxelpipe.atlases import REGION_NUMBERS
from voxelpipe.longitudinal import BRAIN, PairedChange, PairedSettings, paired_change
from voxelpipe.nifti import load_nifti
from voxelpipe.volume import Image, canonical, first_volume

METHOD: Final = "jacobian-integration"
NO_PRIOR: Final = "no earlier study of this subject to compare with"
UNITS: Final = {
    "baseline_ml": "mL",
    "followup_ml": "mL",
    "paired_change_pct": "%",
    "paired_rate_pct_per_year": "%/year",
    "subtraction_change_pct": "%",
    "subtraction_rate_pct_per_year": "%/year",
    "interval_years": "year",
}


def _pct(ratio: float | None) -> float | None:
    return None if ratio is None else round(100.0 * (ratio - 1.0), 4)


def _rate(change_pct: float | None, interval_years: float | None) -> float | None:
    if change_pct is None or interval_years is None or interval_years <= 0:
        return None
    # From the reported (rounded) change, to 6 decimals: the rate is exactly what a reader gets
    # dividing the two reported figures.
    return round(change_pct / interval_years, 6)


def region_measures(
    paired_ratio: float | None,
    baseline_ml: float | None,
    followup_ml: float | None,
    interval_years: float | None,
) -> dict[str, float | None]:
    """One region's entry of the shared shape (docs/analyses.md, "longitudinal")."""
    paired = _pct(paired_ratio)
    subtraction = (
        _pct(followup_ml / baseline_ml)
        if baseline_ml is not None and followup_ml is not None and baseline_ml > 0
        else None
    )
    return {
        "baseline_ml": None if baseline_ml is None else round(baseline_ml, 3),
        "followup_ml": None if followup_ml is None else round(followup_ml, 3),
        "paired_change_pct": paired,
        "paired_rate_pct_per_year": _rate(paired, interval_years),
        "subtraction_change_pct": subtraction,
        "subtraction_rate_pct_per_year": _rate(subtraction, interval_years),
    }


def _label_volumes(labels: npt.NDArray[np.integer[Any]] | None, voxel_ml: float) -> dict[int, float]:
    if labels is None:
        return {}
    counts = np.bincount(np.asarray(labels, dtype=np.int64).ravel())
    return {int(n): float(counts[n]) * voxel_ml for n in np.flatnonzero(counts) if n > 0}


def longitudinal_measures(
    prior: PriorStudy,
    followup: Image,
    followup_mask: npt.NDArray[np.bool_],
    followup_regions: npt.NDArray[np.integer[Any]] | None,
    change: PairedChange,
) -> dict[str, Any]:
    """The measures in the shared shape: "brain" and each of the prior's named regions."""
    baseline_voxel = voxel_volume_ml(prior.image.affine)
    followup_voxel = voxel_volume_ml(followup.affine)
    interval = prior.interval_years
    regions: dict[str, dict[str, float | None]] = {
        BRAIN: region_measures(
            change.ratios.get(BRAIN),
            float(prior.brain_mask.sum()) * baseline_voxel,
            float(followup_mask.sum()) * followup_voxel,
            interval,
        )
    }
    baseline_volumes = _label_volumes(prior.regions, baseline_voxel)
    followup_volumes = _label_volumes(followup_regions, followup_voxel)
    for number, name in sorted(prior.region_names.items()):
        if number not in baseline_volumes:
            continue  # the region has no voxel in the baseline: nothing to follow
        # The follow-up's regional numbers regions by voxelpipe.atlases.REGION_NUMBERS.
        followup_number = REGION_NUMBERS.get(name, number)
        regions[name] = region_measures(
            change.ratios.get(number),
            baseline_volumes[number],
            followup_volumes.get(followup_number),  # None: no regional here, or no voxel of it
            interval,
        )
    return {
        "prior_study_id": prior.study_id,
        "interval_years": interval,  # as pinned (dates are whole days: nothing to round)
        "method": METHOD,
        "regions": regions,
    }


def run_longitudinal(inp: AnalysisInput) -> AnalysisOutput:
    merged_parameters("longitudinal", LONGITUDINAL.parameters, inp.parameters)
    if inp.prior is None:
        return AnalysisOutput(
            measures={
                "prior_study_id": None,
                "interval_years": None,
                "method": METHOD,
                "regions": {},
                "reason": NO_PRIOR,
            }
        )
    prior = inp.prior
    followup = canonical(first_volume(inp.image))
    seg = inp.requirements["tissue-seg"]
    followup_mask = on_grid(load_nifti(seg.artifacts[TISSUE_SEG_MASK_FILE]), followup) > 0
    regional = inp.requirements.get("regional")
    followup_regions = (
        None
        if regional is None
        else np.rint(on_grid(load_nifti(regional.artifacts[REGIONAL_LABELS_FILE]), followup)).astype(np.int32)
    )
    settings = PairedSettings()
    change = paired_change(
        canonical(first_volume(prior.image)),
        np.asarray(prior.brain_mask, dtype=bool),
        followup,
        followup_mask,
        None if prior.regions is None else np.asarray(prior.regions),
        settings,
    )
    measures = longitudinal_measures(prior, followup, followup_mask, followup_regions, change)
    warnings = []
    if prior.interval_years is None:
        warnings.append("no interval between the scans (a study without a scan date): rates are null")
    if prior.regions is None:
        warnings.append("the earlier study did not run regional: the whole brain only")
    elif regional is None:
        warnings.append("this study did not run regional: no subtraction for the regions")
    return AnalysisOutput(
        measures={
            **measures,
            "units": UNITS,
            "registration": {
                "rigid_rotation_deg": round(change.rigid_rotation_deg, 3),
                "rigid_translation_mm": round(change.rigid_translation_mm, 3),
                "halfway_grid_shape": list(change.grid_shape),
                "halfway_grid_spacing_mm": round(change.grid_spacing_mm, 4),
                **settings.describe(),
            },
            "direction_ratios": _direction_ratios(change, prior.region_names),
            "subtraction": (
                "each scan's own brain mask volume and region label volumes (tissue-seg, regional), "
                "follow-up / baseline - 1"
            ),
            "timings_s": {stage: round(seconds, 3) for stage, seconds in change.seconds.items()},
            "warnings": warnings,
        }
    )


def _direction_ratios(change: PairedChange, names: Mapping[int, str]) -> dict[str, dict[str, float]]:
    """Each direction's own ratio (forward: follow-up / baseline; backward: baseline / follow-up):
    their disagreement is the registration's inconsistency, for a reader who checks."""
    out: dict[str, dict[str, float]] = {}
    for key, forward in change.forward.items():
        name = key if isinstance(key, str) else names.get(key)
        if name is None or key not in change.backward:
            continue
        out[name] = {"forward": round(forward, 6), "backward": round(change.backward[key], 6)}
    return out


__all__ = [
    "LONGITUDINAL",
    "METHOD",
    "NO_PRIOR",
    "longitudinal_measures",
    "region_measures",
    "run_longitudinal",
]
