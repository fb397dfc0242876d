"""The DICOM attributes routing reads, from one object's header, as JSON-safe values.

A series is routed on the tags of one of its instances (the receiver picks which). Values are
converted by VR: numbers (DS, IS, FD, FL, US...) become int/float, text stays text, and a
multi-valued attribute becomes a list. The keywords in `MULTI_VALUED` are always lists, even
with one value, so that a rule on ImageType or ScanningSequence sees the same shape from every
scanner.

Enhanced (multi-frame) MR objects keep repetition, echo and inversion times and the b-value in
the Shared Functional Groups Sequence, not at the top level; where the top level lacks them they
are read from there (never from the per-frame groups, which can be megabytes).

`SAFE_KEYWORDS` are the keywords the PS3.15 Basic Profile (Table E.1-1, as shipped with
voxelpipe.dicom.deidentify) does not remove, empty, replace or blank: only their values may be
stored with a routing decision or shown in an explanation. The others (SeriesDescription,
ProtocolName, StudyDescription, StationName, InstitutionName...) may be read and tested by rules,
but their values never leave the ingest boundary.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterable, Mapping
from typing import Any, Final, TypeAlias

import pydicom
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from voxelpipe.dicom.deidentify import action_for
from voxelpipe.rejections import ReasonCode, Rejected

__all__ = [
    "DERIVED_ATTRIBUTES",
    "MAX_TEXT_CHARS",
    "MULTI_VALUED",
    "ROUTING_KEYWORDS",
    "RULE_FIELDS",
    "SAFE_KEYWORDS",
    "TagValue",
    "is_safe",
    "read_routing_tags",
    "safe_tags",
]

# What a routing tag's value may be once read (JSON-safe): None where the element is present but
# empty.
TagValue: TypeAlias = str | int | float | list[str] | list[float] | None

# The DICOM keywords read for routing: classification's inputs, and what rules commonly select on.
ROUTING_KEYWORDS: Final[frozenset[str]] = frozenset(
    {
        # What the object is
        "Modality",
        "SOPClassUID",
        "ImageType",
        "BodyPartExamined",
        "SeriesNumber",
        "NumberOfFrames",
        "Rows",
        "Columns",
        "ImagesInAcquisition",
        "NumberOfTemporalPositions",
        # Who made it (StationName and InstitutionName: testable, never shown)
        "Manufacturer",
        "ManufacturerModelName",
        "SoftwareVersions",
        "StationName",
        "InstitutionName",
        # MR acquisition
        "MagneticFieldStrength",
        "ScanningSequence",
        "SequenceVariant",
        "ScanOptions",
        "SequenceName",
        "MRAcquisitionType",
        "RepetitionTime",
        "EchoTime",
        "InversionTime",
        "FlipAngle",
        "EchoTrainLength",
        "DiffusionBValue",
        "AcquisitionContrast",  # Enhanced MR
        "PulseSequenceName",  # Enhanced MR
        "SliceThickness",
        "SpacingBetweenSlices",
        "PixelSpacing",
        "ContrastBolusAgent",
        # CT
        "KVP",
        "ConvolutionKernel",
        # Free text: a last resort for classification, never shown
        "SeriesDescription",
        "ProtocolName",
        "StudyDescription",
    }
)

# Always lists, whatever the value multiplicity in the object.
MULTI_VALUED: Final[frozenset[str]] = frozenset(
    {"ImageType", "ScanningSequence", "SequenceVariant", "ScanOptions", "PixelSpacing", "ConvolutionKernel"}
)

# Attributes route_exam adds to each series' tags before the rules see them.
DERIVED_ATTRIBUTES: Final[frozenset[str]] = frozenset({"SeriesClass", "SeriesInstances", "ExamSeriesCount"})

# What a rule's condition may name.
RULE_FIELDS: Final[frozenset[str]] = ROUTING_KEYWORDS | DERIVED_ATTRIBUTES

# Text longer than this is cut when read (no attribute read here may be longer: LO is 64
# characters); it also bounds the work a rule's regular expression can do on one value.
MAX_TEXT_CHARS: Final = 256


def is_safe(keyword: str) -> bool:
    """Whether a keyword's value may be stored and shown: a derived attribute, or a DICOM keyword
    the Basic Profile leaves as it is. An unknown keyword is not safe."""
    if keyword in DERIVED_ATTRIBUTES:
        return True
    tag = tag_for_keyword(keyword)
    return tag is not None and action_for(tag) is None


SAFE_KEYWORDS: Final[frozenset[str]] = frozenset(k for k in RULE_FIELDS if is_safe(k))


def safe_tags(tags: Mapping[str, TagValue]) -> dict[str, TagValue]:
    """Only the tags whose values may be stored and shown (see SAFE_KEYWORDS)."""
    return {keyword: value for keyword, value in tags.items() if keyword in SAFE_KEYWORDS}


# Enhanced MR: where the Shared Functional Groups Sequence keeps what classic objects hold at the
# top level: (functional group sequence, keyword inside it, our keyword).
_SHARED_GROUPS: Final = (
    ("MRTimingAndRelatedParametersSequence", "RepetitionTime", "RepetitionTime"),
    ("MREchoSequence", "EffectiveEchoTime", "EchoTime"),
    ("MRModifierSequence", "InversionTimes", "InversionTime"),
    ("MRDiffusionSequence", "DiffusionBValue", "DiffusionBValue"),
)
_NUMERIC_VRS: Final = frozenset({"DS", "IS", "FD", "FL", "US", "SS", "UL", "SL", "UV", "SV"})
_WANTED: Final = sorted(ROUTING_KEYWORDS | {"SharedFunctionalGroupsSequence"})


_INTEGER_VRS: Final = frozenset({"IS", "US", "SS", "UL", "SL", "UV", "SV"})


def _number(vr: str, value: Any) -> float | int | None:
    """An integer for the integer VRs, a float for the others; None when it is not a finite number."""
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        return None
    if not math.isfinite(number):
        return None
    return int(number) if vr in _INTEGER_VRS and number.is_integer() else number


def _text(value: Any) -> str:
    return str(value).strip(" \x00")[:MAX_TEXT_CHARS]


def _convert(keyword: str, vr: str, value: Any) -> TagValue:
    """A pydicom value as a TagValue (None for an empty or unusable one)."""
    values: list[Any] = list(value) if isinstance(value, MultiValue | list | tuple) else [value]
    values = [v for v in values if v is not None and _text(v) != ""]
    if not values:
        return None
    if vr in _NUMERIC_VRS:
        numbers = [_number(vr, v) for v in values]
        if any(n is None for n in numbers):
            return None
        floats: list[float] = [float(n) for n in numbers if n is not None]
        if keyword in MULTI_VALUED or len(numbers) > 1:
            return floats
        return numbers[0]
    texts = [_text(v) for v in values]
    if keyword in MULTI_VALUED or len(texts) > 1:
        return texts
    return texts[0]


def _shared_group_values(ds: Dataset) -> dict[str, TagValue]:
    found: dict[str, TagValue] = {}
    shared = ds.get("SharedFunctionalGroupsSequence")
    if not shared:
        return found
    groups = shared[0]
    for sequence, inner, keyword in _SHARED_GROUPS:
        group = groups.get(sequence)
        if not group or inner not in group[0]:
            continue
        element = group[0].data_element(inner)
        value = _convert(keyword, element.VR, element.value)
        if isinstance(value, list) and keyword != "DiffusionBValue":
            value = value[0] if value else None  # InversionTimes: the first (one for MPRAGE)
        found[keyword] = value
    return found


def read_routing_tags(data: bytes) -> dict[str, TagValue]:
    """The routing keywords present in one DICOM object's header (pixels are never read).

    Raises Rejected(NOT_DICOM) when the bytes are not a DICOM object pydicom can parse.
    """
    try:
        ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True, specific_tags=_WANTED, force=False)
    except Exception as error:  # hostile bytes: pydicom raises many kinds (struct.error, KeyError...)
        raise Rejected(ReasonCode.NOT_DICOM, f"not a DICOM object routing could read ({error})") from error
    if "SOPClassUID" not in ds and "Modality" not in ds and "ImageType" not in ds:
        raise Rejected(ReasonCode.NOT_DICOM, "no DICOM header: no SOP class, modality or image type")
    tags: dict[str, TagValue] = {}
    try:
        for keyword in ROUTING_KEYWORDS:
            element = ds.data_element(keyword) if keyword in ds else None
            if element is not None:
                tags[keyword] = _convert(keyword, element.VR, element.value)
        for keyword, value in _shared_group_values(ds).items():
            if tags.get(keyword) is None:
                tags[keyword] = value
    except Exception as error:
        # A value pydicom cannot convert (a malformed DS, a bad sequence): the header is damaged.
        raise Rejected(ReasonCode.NOT_DICOM, f"a routing attribute does not parse ({error})") from error
    return tags


def keyword_vr(keyword: str) -> str | None:
    """The VR the data dictionary gives a keyword (None for a derived attribute)."""
    tag = tag_for_keyword(keyword)
    return None if tag is None else str(dictionary_VR(tag))


def as_list(value: TagValue) -> list[Any]:
    """Every value of a tag: a list as it is, one value as a list of one, None as none."""
    if value is None:
        return []
    if isinstance(value, list):
        return list(value)
    return [value]


def present(tags: Mapping[str, TagValue], keyword: str) -> bool:
    """Whether a tag is there with a value (an empty one counts as missing)."""
    return bool(as_list(tags.get(keyword)))


def texts(values: Iterable[Any]) -> list[str]:
    return [str(v).upper() for v in values]
