"""The quality flags of a study, in words: what each warning the analyses raised means for the
reader of its measures."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# (pattern of the analysis's warning text, title, what it means for the reader). First match wins.
_MEANINGS: tuple[tuple[re.Pattern[str], str, str], ...] = tuple(
    (re.compile(pattern, re.IGNORECASE), title, meaning)
    for pattern, title, meaning in (
        (
            r"volumes; QC describes the first",
            "Several volumes in one file",
            "The file holds a time series or several contrasts; every measure describes the first "
            "volume only.",
        ),
        (
            r"non-finite voxels",
            "Missing values in the image",
            "Some voxels were NaN or infinite and counted as 0: intensities near them, and any volume "
            "they fall in, may be underestimated.",
        ),
        (
            r"sform and qform codes are both 0",
            "Unknown spatial orientation",
            "The file does not say how its voxels lie in the scanner: left and right may be swapped and "
            "voxel sizes are a guess, so volumes in mL and left/right measures cannot be trusted.",
        ),
        (
            r"pixdim disagrees",
            "Inconsistent voxel sizes in the header",
            "Two header fields disagree on the voxel size; the affine's was used. Volumes depend on it: "
            "check the scan's voxel size.",
        ),
        (
            r"oblique acquisition",
            "Oblique acquisition",
            "The slices were tilted relative to the scanner axes; measures are unaffected, but the "
            "previews show the volume in its own voxel axes.",
        ),
        (
            r"image is constant",
            "Blank image",
            "Every voxel has the same value: there is no anatomy to measure and every measure is "
            "meaningless.",
        ),
        (
            r"registration",
            "Registration to the template",
            "The atlas was carried onto the scan less well than usual: regional volumes may include "
            "neighbouring tissue or miss part of a structure.",
        ),
        (
            r"MONOCHROME1|Modality LUT|localizer|Burned In",
            "DICOM conversion note",
            "The DICOM series had a property the conversion reports; check the images before relying "
            "on the measures.",
        ),
        (
            r"slice steps vary|gantry tilt|sheared",
            "Irregular slice geometry",
            "The slices were not evenly spaced or were tilted; volumes are computed on the geometry "
            "as stored and may be slightly off.",
        ),
    )
)
_FALLBACK = (
    "Analysis warning",
    "The analysis raised a warning it has no plain-language explanation for; read it with the "
    "measures it concerns.",
)


@dataclass(frozen=True)
class Flag:
    source: str  # the analysis that raised it
    title: str
    meaning: str  # what it means for the reader
    detail: str  # the analysis's own words (or a number behind the flag)
    severity: str = "warning"  # "warning", or "attention" for what invalidates measures


def explain(source: str, warning: str) -> Flag:
    for pattern, title, meaning in _MEANINGS:
        if pattern.search(warning):
            severe = title in ("Unknown spatial orientation", "Blank image")
            return Flag(source, title, meaning, warning, "attention" if severe else "warning")
    return Flag(source, _FALLBACK[0], _FALLBACK[1], warning)


def study_flags(document: Mapping[str, Any]) -> list[Flag]:
    """Every warning of every analysis, explained, then the flags the measures themselves raise."""
    flags: list[Flag] = []
    analyses = document.get("analyses") or {}
    for name, entry in analyses.items():
        measures = entry.get("measures") if isinstance(entry, Mapping) else None
        if not isinstance(measures, Mapping):
            continue
        for warning in measures.get("warnings") or []:
            flags.append(explain(name, str(warning)))
    regional = (analyses.get("regional") or {}).get("measures") or {}
    if regional.get("reliable") is False:
        flags.append(
            Flag(
                "regional",
                "Regional volumes unreliable",
                "The regional analysis judged its own result unreliable (see its warnings): do not "
                "interpret the regional volumes.",
                "reliable: false",
                "attention",
            )
        )
    atlas = regional.get("atlas")
    if isinstance(atlas, Mapping) and atlas.get("commercial_use") is False:
        flags.append(
            Flag(
                "regional",
                "Non-commercial atlas",
                "The regional volumes come from an atlas licensed for non-commercial use only; "
                "they may not be used commercially.",
                str(atlas.get("licence", "")).split(".")[0],
            )
        )
    qc = (analyses.get("qc") or {}).get("measures") or {}
    if qc and qc.get("snr") is None and (qc.get("noise") or {}).get("note"):
        flags.append(
            Flag(
                "qc",
                "Noise not measurable",
                "The image's background carries no noise (it was masked, skull-stripped or synthesised), "
                "so its signal-to-noise ratio cannot be reported; this says nothing against the scan.",
                str((qc.get("noise") or {}).get("note")),
                "info",
            )
        )
    normative = (analyses.get("normative") or {}).get("measures") or {}
    if normative and normative.get("status") not in (None, "ok"):
        flags.append(
            Flag(
                "normative",
                "No normative comparison",
                "The volumes could not be compared with a reference population; they are reported as "
                "measured.",
                f"{normative.get('status')}: {normative.get('message', '')}".rstrip(": "),
                "info",
            )
        )
    for measure, score in (normative.get("scores") or {}).items():
        z = score.get("z") if isinstance(score, Mapping) else None
        if isinstance(z, int | float) and abs(z) >= 1.96:
            flags.append(
                Flag(
                    "normative",
                    f"{measure.replace('_', ' ')} outside the 2.5th-97.5th centiles",
                    "This volume is unusual for the subject's age and sex under the reference used; "
                    "it is a statistical observation to be read with the images, not a diagnosis.",
                    f"z = {z}",
                    "attention",
                )
            )
    return flags
