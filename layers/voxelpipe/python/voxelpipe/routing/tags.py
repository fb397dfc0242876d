"""Routing tags from one DICOM object's header, as JSON-safe values.

A series is routed on the tags of one of its instances (the receiver picks which): the keywords of
routing.keywords.ROUTING_KEYWORDS present in it. Values are converted by VR: numbers (DS, IS, FD,
FL, US...) become int/float, text stays text, and a multi-valued attribute becomes a list (the
keywords in MULTI_VALUED always are lists).

Enhanced (multi-frame) MR objects keep repetition, echo and inversion times and the b-value in
the Shared Functional Groups Sequence, not at the top level; where the top level lacks them they
are read from there (never from the per-frame groups, which can be megabytes).
"""

from __future__ import annotations

import io
import math
import warnings
from typing import Any, Final

import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue

from voxelpipe.rejections import ReasonCode, Rejected
from voxelpipe.routing.keywords import MAX_TEXT_CHARS, MULTI_VALUED, ROUTING_KEYWORDS, TagValue

__all__ = ["read_routing_tags"]

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


def _read_header(data: bytes) -> Dataset:
    """The header's routing elements: a Part 10 file, or a bare dataset (as some senders store
    what a C-STORE carried); nothing past the pixels is read."""
    # pydicom warns of what it finds damaged (a missing delimiter...): the verdict is ours to give.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True, specific_tags=_WANTED)
        except InvalidDicomError:
            # No preamble and no file meta: a bare dataset is accepted if it parses into a plausible
            # header (checked by the caller); anything else fails to parse or comes out empty.
            return pydicom.dcmread(
                io.BytesIO(data), stop_before_pixels=True, specific_tags=_WANTED, force=True
            )


def read_routing_tags(data: bytes) -> dict[str, TagValue]:
    """The routing keywords present in one DICOM object's header (pixels are never read).

    Raises Rejected(NOT_DICOM) when the bytes are not a DICOM object pydicom can parse.
    """
    try:
        ds = _read_header(data)
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
