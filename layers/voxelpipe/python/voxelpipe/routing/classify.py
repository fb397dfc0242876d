"""What kind of series a set of routing tags describes: T1, T2, FLAIR, DWI, a localizer...

Conservative by design: OTHER whenever the tags do not say clearly. Acquisition parameters decide;
the free-text SeriesDescription and ProtocolName only where the parameters are missing or
inconclusive (never to overrule them). The decision table, first row that applies wins
(times in ms; "ScanningSequence has X" means any of its values is X; docs/rules.md repeats it):

| #  | when                                                                         | class     |
|----|------------------------------------------------------------------------------|-----------|
| 1  | ImageType has LOCALIZER or SCOUT                                             | LOCALIZER |
| 2  | ImageType's first value is DERIVED (MPR, MIP, ADC and FA maps, ...)          | DERIVED   |
| 3  | Modality CT                                                                  | CT        |
| 4  | Modality present and not MR                                                  | OTHER     |
| 5  | Enhanced MR AcquisitionContrast T1 / T2 / PROTON_DENSITY / FLUID_ATTENUATED /| T1 / T2 / |
|    | DIFFUSION (any other value but UNKNOWN: OTHER)                               | PD/FLAIR/DWI |
| 6  | ImageType has P, PHASE, R, REAL, I or IMAGINARY (not a magnitude image)      | OTHER     |
| 7  | DiffusionBValue present, ImageType has DIFFUSION, SequenceName like *ep_b…,  | DWI       |
|    | or PulseSequenceName / ScanOptions naming diffusion                          |           |
| 8  | SequenceVariant or ScanOptions has TOF, or ImageType has ANGIO (angiography) | OTHER     |
| 9  | RepetitionTime or EchoTime missing                                           | (text)    |
| 10 | InversionTime ≥ 1500, RepetitionTime ≥ 4000, EchoTime ≥ 60                   | FLAIR     |
| 11 | InversionTime 400-1300, EchoTime ≤ 30 (MPRAGE, BRAVO, T1-FLAIR)              | T1        |
| 12 | any other InversionTime > 0 (STIR, MP2RAGE's second inversion, ...)          | OTHER     |
| 13 | ScanningSequence has EP (echo-planar without a diffusion cue: BOLD, perfusion)| OTHER    |
| 14 | RepetitionTime < 800, EchoTime < 30 (gradient echo: EchoTime ≤ 15)           | T1        |
| 15 | RepetitionTime ≥ 2000, EchoTime ≥ 60, ScanningSequence not GR                | T2        |
| 16 | RepetitionTime ≥ 1500, EchoTime ≤ 30, ScanningSequence has SE and not GR     | PD        |
| 17 | otherwise                                                                    | (text)    |

(text), the last resort: SeriesDescription, then ProtocolName, read as words (case-insensitive,
'_' and '-' separate words): localizer/scout/survey/3-plane (and the series has at most
`FEW_LOCALIZER_INSTANCES` instances, where the count is known) -> LOCALIZER; ADC/FA/MIP/MPR/
reformat -> DERIVED; FLAIR -> FLAIR; DWI/DTI/diffusion/trace -> DWI; T1/T1w/MPRAGE/BRAVO/SPGR ->
T1; T2/T2w (not T2*) -> T2; PD/PDw -> PD; nothing -> OTHER. Only for MR (or a missing Modality).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from voxelpipe.routing.tags import TagValue, as_list, texts

__all__ = ["Classification", "SeriesClass", "classify", "classify_series"]


class SeriesClass(StrEnum):
    T1 = "T1"
    T2 = "T2"
    FLAIR = "FLAIR"
    PD = "PD"
    DWI = "DWI"
    LOCALIZER = "LOCALIZER"
    DERIVED = "DERIVED"  # reformatted or computed images (MPR, MIP, ADC...), not acquired
    CT = "CT"
    OTHER = "OTHER"  # anything else, and whatever the tags do not say clearly


@dataclass(frozen=True)
class Classification:
    series_class: SeriesClass
    # Why, in words that never quote a free-text attribute's value.
    reason: str


# A series the description calls a localizer is one only if it has at most this many instances.
FEW_LOCALIZER_INSTANCES: Final = 10

_CONTRASTS: Final[dict[str, SeriesClass]] = {
    "T1": SeriesClass.T1,
    "T2": SeriesClass.T2,
    "PROTON_DENSITY": SeriesClass.PD,
    "FLUID_ATTENUATED": SeriesClass.FLAIR,
    "DIFFUSION": SeriesClass.DWI,
}
_NOT_MAGNITUDE: Final = frozenset({"P", "PHASE", "R", "REAL", "I", "IMAGINARY"})
_SIEMENS_DIFFUSION: Final = re.compile(r"ep_b\d", re.IGNORECASE)  # SequenceName *ep_b1000t
_DIFFUSION_WORD: Final = re.compile(r"DIFF|DWI|DTI", re.IGNORECASE)


def _word(pattern: str) -> str:
    # Words of a description: letters and digits, with anything else between them.
    return rf"(?<![a-z0-9])(?:{pattern})(?![a-z0-9*])"


_DESCRIPTIONS: Final[tuple[tuple[re.Pattern[str], SeriesClass], ...]] = tuple(
    (re.compile(_word(pattern)), series_class)
    for pattern, series_class in (
        (r"locali[sz]er|scout|survey|3[ -]?plane|tri[ -]?pilot|aahead_?scout", SeriesClass.LOCALIZER),
        (r"adc|fa|mip|mpr|reformat\w*|mpr_\w+", SeriesClass.DERIVED),
        (r"\w*flair", SeriesClass.FLAIR),
        (r"dwi|dti|diff\w*|trace|ep2d_diff\w*", SeriesClass.DWI),
        (r"t1w?|mp-?rage|mprage|bravo|f?spgr|tfl3d\w*|3d_?tfe", SeriesClass.T1),
        (r"t2w?", SeriesClass.T2),
        (r"pdw?|proton[ _]density", SeriesClass.PD),
    )
)


def _number(tags: Mapping[str, TagValue], keyword: str) -> float | None:
    values = as_list(tags.get(keyword))
    if not values:
        return None
    try:
        return float(values[0])
    except (TypeError, ValueError):
        return None


def _words(tags: Mapping[str, TagValue], keyword: str) -> set[str]:
    return {v.strip() for v in texts(as_list(tags.get(keyword)))}


def _by_description(tags: Mapping[str, TagValue], why: str) -> Classification:
    instances = _number(tags, "SeriesInstances")
    for keyword in ("SeriesDescription", "ProtocolName"):
        for value in as_list(tags.get(keyword)):
            text = str(value).lower().replace("_", " ")
            for pattern, series_class in _DESCRIPTIONS:
                if not pattern.search(text):
                    continue
                if series_class is SeriesClass.LOCALIZER and (
                    instances is not None and instances > FEW_LOCALIZER_INSTANCES
                ):
                    continue  # a long series is no localizer, whatever its name says
                return Classification(series_class, f"{why}; by {keyword} (last resort)")
    return Classification(SeriesClass.OTHER, f"{why}; no description to go by")


def _mr(tags: Mapping[str, TagValue]) -> Classification | str:
    """Rows 5-16 of the table: a class, or why the parameters were inconclusive."""
    image_type = _words(tags, "ImageType")
    contrast = next(iter(texts(as_list(tags.get("AcquisitionContrast")))), None)
    if contrast is not None and contrast != "UNKNOWN":
        series_class = _CONTRASTS.get(contrast, SeriesClass.OTHER)
        return Classification(series_class, f"AcquisitionContrast {contrast}")
    if image_type & _NOT_MAGNITUDE:
        return Classification(SeriesClass.OTHER, "not a magnitude image (ImageType)")
    if (
        as_list(tags.get("DiffusionBValue"))
        or "DIFFUSION" in image_type
        or any(_SIEMENS_DIFFUSION.search(str(v)) for v in as_list(tags.get("SequenceName")))
        or any(_DIFFUSION_WORD.search(str(v)) for v in as_list(tags.get("PulseSequenceName")))
        or any(_DIFFUSION_WORD.search(str(v)) for v in as_list(tags.get("ScanOptions")))
    ):
        return Classification(SeriesClass.DWI, "diffusion weighting (b-value, image type or sequence)")
    variants = _words(tags, "SequenceVariant") | _words(tags, "ScanOptions")
    if "TOF" in variants or "ANGIO" in image_type:
        return Classification(SeriesClass.OTHER, "angiography")
    tr, te = _number(tags, "RepetitionTime"), _number(tags, "EchoTime")
    if tr is None or te is None:
        return "no RepetitionTime or EchoTime"
    ti = _number(tags, "InversionTime")
    sequence = _words(tags, "ScanningSequence")
    gradient_echo = "GR" in sequence
    timing = f"TR {tr:g}, TE {te:g}" + ("" if ti is None else f", TI {ti:g}")
    if ti is not None and ti > 0:
        if ti >= 1500 and tr >= 4000 and te >= 60:
            return Classification(SeriesClass.FLAIR, f"inversion recovery with long TI ({timing})")
        if 400 <= ti <= 1300 and te <= 30:
            return Classification(SeriesClass.T1, f"inversion-prepared, short TE ({timing})")
        return Classification(SeriesClass.OTHER, f"inversion recovery of another kind ({timing})")
    if "EP" in sequence:
        return Classification(SeriesClass.OTHER, "echo-planar without diffusion weighting")
    if tr < 800 and te < 30 and (te <= 15 or not gradient_echo):
        return Classification(SeriesClass.T1, f"short TR, short TE ({timing})")
    if tr >= 2000 and te >= 60 and not gradient_echo:
        return Classification(SeriesClass.T2, f"long TR, long TE ({timing})")
    if tr >= 1500 and te <= 30 and "SE" in sequence and not gradient_echo:
        return Classification(SeriesClass.PD, f"spin echo, long TR, short TE ({timing})")
    return f"timing {timing} is not conclusive"


def classify(tags: Mapping[str, TagValue]) -> Classification:
    """The series' class and why (see the module's table)."""
    image_type = texts(as_list(tags.get("ImageType")))
    if {"LOCALIZER", "SCOUT"} & set(image_type):
        return Classification(SeriesClass.LOCALIZER, "ImageType says LOCALIZER/SCOUT")
    if image_type and image_type[0] == "DERIVED":
        return Classification(SeriesClass.DERIVED, "ImageType says DERIVED")
    modality = next(iter(texts(as_list(tags.get("Modality")))), None)
    if modality == "CT":
        return Classification(SeriesClass.CT, "Modality CT")
    if modality is not None and modality != "MR":
        return Classification(SeriesClass.OTHER, f"Modality {modality}")
    found = _mr(tags)
    if isinstance(found, Classification):
        return found
    return _by_description(tags, found)


def classify_series(tags: Mapping[str, TagValue]) -> SeriesClass:
    """The series' class (see the module's table); OTHER when the tags do not say clearly."""
    return classify(tags).series_class
