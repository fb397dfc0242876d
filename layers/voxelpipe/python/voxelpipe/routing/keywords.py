"""The DICOM attributes routing reads, and which of their values may be stored and shown.

`ROUTING_KEYWORDS` are read from one object's header (routing.tags.read_routing_tags); rules may
name them and the derived attributes route_exam adds (`DERIVED_ATTRIBUTES`). The keywords in
`MULTI_VALUED` are always lists, even with one value, so that a rule on ImageType or
ScanningSequence sees the same shape from every scanner.

`safe_keywords()` are those the PS3.15 Basic Profile (Table E.1-1, as shipped with
voxelpipe.dicom.deidentify) does not remove, empty, replace or blank, plus the derived
attributes: only their values may be stored with a routing decision or shown in an explanation.
The others (SeriesDescription, ProtocolName, StudyDescription, StationName, InstitutionName...)
may be read and tested by rules, but their values never leave the ingest boundary.

No pydicom here: the rule language (and the API's request models) load without it; the
Basic Profile is read on the first call that needs it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from functools import cache
from typing import Any, Final, TypeAlias

__all__ = [
    "DERIVED_ATTRIBUTES",
    "MAX_TEXT_CHARS",
    "MULTI_VALUED",
    "ROUTING_KEYWORDS",
    "RULE_FIELDS",
    "TagValue",
    "as_list",
    "is_safe",
    "present",
    "safe_keywords",
    "safe_tags",
    "texts",
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
    return keyword in DERIVED_ATTRIBUTES or _profile_leaves(keyword)


@cache
def safe_keywords() -> frozenset[str]:
    """The rule fields whose values may be stored and shown (see the module's docstring)."""
    return frozenset(keyword for keyword in RULE_FIELDS if is_safe(keyword))


def _profile_leaves(keyword: str) -> bool:
    # Imported here: pydicom's dictionary and the profile's table, where a decision is made.
    from pydicom.datadict import tag_for_keyword

    from voxelpipe.dicom.deidentify import action_for

    tag = tag_for_keyword(keyword)
    return tag is not None and action_for(tag) is None


def safe_tags(tags: Mapping[str, TagValue]) -> dict[str, TagValue]:
    """Only the tags whose values may be stored and shown (see safe_keywords)."""
    safe = safe_keywords()
    return {keyword: value for keyword, value in tags.items() if keyword in safe}


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
