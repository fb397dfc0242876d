"""DICOMweb (PS3.18) documents, as pure functions: the multipart/related bodies STOW-RS and WADO-RS
exchange, the STOW-RS response, QIDO-RS results built from an exam's de-identified metadata, and
WADO-RS metadata. No HTTP framework and no AWS here (voxelpipe.api.routes.dicomweb serves them).

Every UID in what these functions build is one voxelpipe holds: the pseudonymous UIDs of
de-identification (docs/dicomweb.md). Our own identifiers and decisions travel in a private block
(VOXELPIPE_PRIVATE_CREATOR), so a standard client still reads standard attributes.
"""

from __future__ import annotations

import email.parser
import email.policy
import io
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, Final

from pydicom import dcmread
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.tag import BaseTag, Tag
from urllib3.fields import RequestField
from urllib3.filepost import choose_boundary, encode_multipart_formdata

from voxelpipe.rejections import ReasonCode

DICOM: Final = "application/dicom"
DICOM_JSON: Final = "application/dicom+json"
MULTIPART_RELATED: Final = "multipart/related"
# Explicit VR Little Endian: PS3.18's default transfer syntax for application/dicom.
DEFAULT_TRANSFER_SYNTAX: Final = "1.2.840.10008.1.2.1"

# Our attributes on QIDO results: a private block (PS3.5 7.8), creator "VOXELPIPE" in (0011,0010),
# so its elements are (0011,10xx).
VOXELPIPE_PRIVATE_GROUP: Final = 0x0011
VOXELPIPE_PRIVATE_CREATOR: Final = "VOXELPIPE"
# element offset: (VR, what it holds)
PRIVATE_ELEMENTS: Final[dict[str, tuple[int, str]]] = {
    "study_id": (0x01, "LO"),  # the voxelpipe study: the exam (study level) or the series' study
    "selected": (0x02, "CS"),  # YES / NO: whether the rules selected the series
    "rule": (0x03, "LO"),  # the rule that decided
    "series_class": (0x04, "CS"),  # T1, T2, FLAIR, DWI, LOCALIZER, ... (the rules' classification)
    "explanation": (0x05, "LT"),  # why, in words
}


class FailureReason(IntEnum):
    """Failure Reason (0008,1197) of a STOW-RS response's Failed SOP Sequence item: PS3.18
    Annex I, Store Instances response (the A7xx/A9xx/Cxxx ranges, C122, 0110, 0122)."""

    OUT_OF_RESOURCES = 0xA700  # A7xx: refused out of resources
    DATA_SET_DOES_NOT_MATCH = 0xA900  # A9xx: data set does not match (its SOP class / the request)
    CANNOT_UNDERSTAND = 0xC000  # Cxxx: cannot understand certain data elements
    TRANSFER_SYNTAX_NOT_SUPPORTED = 0xC122  # referenced transfer syntax not supported
    PROCESSING_FAILURE = 0x0110  # general failure in processing the operation
    SOP_CLASS_NOT_SUPPORTED = 0x0122  # referenced SOP class not supported


# A rejection's reason code, as the STOW-RS failure reason that says it best.
_FAILURE_FOR_REASON: Final[dict[ReasonCode, FailureReason]] = {
    ReasonCode.UNSUPPORTED_TRANSFER_SYNTAX: FailureReason.TRANSFER_SYNTAX_NOT_SUPPORTED,
    ReasonCode.NO_PIXEL_DATA: FailureReason.SOP_CLASS_NOT_SUPPORTED,  # images only
    ReasonCode.TOO_LARGE: FailureReason.OUT_OF_RESOURCES,
    ReasonCode.DECOMPRESSION_BOMB: FailureReason.OUT_OF_RESOURCES,
    ReasonCode.NOT_DICOM: FailureReason.CANNOT_UNDERSTAND,
    ReasonCode.TRUNCATED: FailureReason.CANNOT_UNDERSTAND,
    ReasonCode.BAD_HEADER: FailureReason.CANNOT_UNDERSTAND,
}


def failure_reason(reason: ReasonCode | str) -> FailureReason:
    """The STOW-RS failure reason of an instance refused with `reason` (any other: processing)."""
    try:
        return _FAILURE_FOR_REASON.get(ReasonCode(reason), FailureReason.PROCESSING_FAILURE)
    except ValueError:
        return FailureReason.PROCESSING_FAILURE


# --- multipart/related ----------------------------------------------------------------------------


class InvalidMultipart(ValueError):
    """A body that is not the multipart/related its Content-Type says."""


@dataclass(frozen=True)
class BodyPart:
    content_type: str  # the part's media type, lower case ("" when the part names none)
    data: bytes


def parse_multipart_related(content_type: str, body: bytes) -> list[BodyPart]:
    """The parts of a multipart/related body (RFC 2387), by the standard library's MIME parser.

    Raises InvalidMultipart when the Content-Type is not multipart/related with a boundary, or the
    body holds no part."""
    header = email.parser.BytesHeaderParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + content_type.encode("latin-1", "replace") + b"\r\n\r\n"
    )
    if header.get_content_type() != MULTIPART_RELATED or not header.get_boundary():
        raise InvalidMultipart(f"not {MULTIPART_RELATED} with a boundary: {content_type[:200]!r}")
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + content_type.encode("latin-1", "replace") + b"\r\n\r\n" + body
    )
    payload = list(message.iter_parts()) if message.is_multipart() else []
    if not payload:
        raise InvalidMultipart("the body holds no part: is the boundary the one the Content-Type names?")
    parts = []
    for part in payload:
        data = part.get_payload(decode=True)
        declared = part.get("Content-Type")
        parts.append(
            BodyPart(
                content_type=part.get_content_type() if declared else "",
                data=data if isinstance(data, bytes) else b"",
            )
        )
    return parts


def multipart_related(parts: Iterable[tuple[bytes, str]], part_type: str = DICOM) -> tuple[bytes, str]:
    """(body, Content-Type) of a multipart/related body of `parts` ((data, the part's
    Content-Type)), by urllib3's multipart encoder (binary-safe)."""
    boundary = choose_boundary()
    fields = [
        RequestField(name=str(number), data=data, headers={"Content-Type": content_type})
        for number, (data, content_type) in enumerate(parts)
    ]
    body, _ = encode_multipart_formdata(fields, boundary=boundary)
    return body, f'{MULTIPART_RELATED}; type="{part_type}"; boundary={boundary}'


def media_type_parameters(value: str) -> tuple[str, dict[str, str]]:
    """A media type's (type/subtype lower case, parameters) from a header value."""
    header = email.parser.BytesHeaderParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + value.encode("latin-1", "replace") + b"\r\n\r\n"
    )
    params = {key.lower(): str(val) for key, val in header["Content-Type"].params.items()}
    return header.get_content_type(), params


# --- reading what a part holds --------------------------------------------------------------------


def read_header(data: bytes) -> Dataset | None:
    """The dataset of a DICOM Part 10 object without its pixels, or None when it does not parse."""
    try:
        return dcmread(io.BytesIO(data), stop_before_pixels=True, force=False)
    except (InvalidDicomError, EOFError, ValueError, TypeError, KeyError, AttributeError, OSError):
        return None
    except (struct.error, NotImplementedError, OverflowError, IndexError, RecursionError):
        return None  # what pydicom raises on some malformed headers (hostile senders)


# --- STOW-RS response -----------------------------------------------------------------------------


@dataclass(frozen=True)
class StoredInstance:
    sop_class_uid: str
    sop_instance_uid: str  # pseudonymous
    retrieve_url: str


@dataclass(frozen=True)
class FailedInstance:
    sop_class_uid: str | None  # when the part was readable (a SOP class names no patient)
    reason: FailureReason


def store_response(
    stored: Sequence[StoredInstance], failed: Sequence[FailedInstance], retrieve_url: str | None
) -> dict[str, Any]:
    """The Store Instances response (PS3.18 10.5.3) as DICOM JSON.

    A failed item carries no SOP Instance UID: the only one we would have is the sender's
    original, and no original identifier leaves the ingest boundary (docs/dicomweb.md)."""
    response = Dataset()
    if retrieve_url is not None:
        response.RetrieveURL = retrieve_url
    if stored:
        items = []
        for instance in stored:
            item = Dataset()
            item.ReferencedSOPClassUID = instance.sop_class_uid
            item.ReferencedSOPInstanceUID = instance.sop_instance_uid
            item.RetrieveURL = instance.retrieve_url
            items.append(item)
        response.ReferencedSOPSequence = items
    if failed:
        failures = []
        for failure in failed:
            item = Dataset()
            if failure.sop_class_uid:
                item.ReferencedSOPClassUID = failure.sop_class_uid
            item.FailureReason = int(failure.reason)
            failures.append(item)
        response.FailedSOPSequence = failures
    return response.to_json_dict()


# --- QIDO-RS --------------------------------------------------------------------------------------


class UnknownAttribute(ValueError):
    """An includefield that names no DICOM attribute."""


def attribute_tag(name: str) -> BaseTag:
    """The tag a QIDO-RS parameter names: a keyword (`SeriesDescription`) or 8 hex digits."""
    if len(name) == 8 and all(c in "0123456789abcdefABCDEF" for c in name):
        return Tag(int(name, 16))
    tag = tag_for_keyword(name)
    if tag is None:
        raise UnknownAttribute(f"{name!r} is not a DICOM keyword nor a tag (8 hex digits)")
    return Tag(tag)


@dataclass(frozen=True)
class ExamSeries:
    """One series of an exam, as the exam's record holds it (StudyRecord.dicom["series"])."""

    study_instance_uid: str
    series: Mapping[str, Any]

    @property
    def series_instance_uid(self) -> str:
        return str(self.series.get("series_instance_uid") or "")

    @property
    def modality(self) -> str:
        return str(self.series.get("modality") or (self.series.get("tags") or {}).get("Modality") or "")


@dataclass(frozen=True)
class Exam:
    """An exam voxelpipe received: the exam study's id and its `dicom` document."""

    study_id: str
    dicom: Mapping[str, Any]

    @property
    def study_instance_uid(self) -> str:
        return str(self.dicom.get("study_instance_uid") or "")

    @property
    def series(self) -> list[ExamSeries]:
        return [ExamSeries(self.study_instance_uid, s) for s in self.dicom.get("series") or []]

    @property
    def modalities(self) -> list[str]:
        return sorted({s.modality for s in self.series if s.modality})

    @property
    def instances(self) -> int:
        return sum(int(s.series.get("instances") or 0) for s in self.series)


def uid_list(value: str | None) -> set[str] | None:
    """A QIDO-RS UID list match (PS3.18 8.3.4.1: UIDs separated by commas or backslashes)."""
    if value is None:
        return None
    return {uid.strip() for uid in value.replace("\\", ",").split(",") if uid.strip()}


def value_list(value: str | None) -> set[str] | None:
    """Comma- or backslash-separated values, upper case (Modality, ModalitiesInStudy)."""
    uids = uid_list(value)
    return None if uids is None else {v.upper() for v in uids}


def matching_exams(
    exams: Iterable[Exam], study_uids: set[str] | None, modalities: set[str] | None
) -> list[Exam]:
    return [
        exam
        for exam in exams
        if (study_uids is None or exam.study_instance_uid in study_uids)
        and (modalities is None or modalities & set(exam.modalities))
    ]


def matching_series(
    series: Iterable[ExamSeries], series_uids: set[str] | None, modalities: set[str] | None
) -> list[ExamSeries]:
    return [
        s
        for s in series
        if (series_uids is None or s.series_instance_uid in series_uids)
        and (modalities is None or s.modality.upper() in modalities)
    ]


def _private(ds: Dataset, values: Mapping[str, Any]) -> None:
    present = {key: value for key, value in values.items() if value not in (None, "")}
    if not present:
        return
    block = ds.private_block(VOXELPIPE_PRIVATE_GROUP, VOXELPIPE_PRIVATE_CREATOR, create=True)
    for key, value in present.items():
        offset, vr = PRIVATE_ELEMENTS[key]
        block.add_new(offset, vr, str(value))


def _set(ds: Dataset, tag: BaseTag, value: Any) -> None:
    """Set `tag` to a value from our JSON records, if pydicom takes it for the tag's VR."""
    if value is None or value == "" or value == []:
        return
    try:
        vr = dictionary_VR(tag)
        if vr == "SQ" or vr.startswith("O") or vr in ("UN", "AT"):
            return  # records hold plain values only
        ds.add_new(tag, vr, value)
    except (KeyError, ValueError, TypeError, OverflowError):
        return


def _include(ds: Dataset, tags: Mapping[str, Any], include: Sequence[BaseTag] | None) -> None:
    """The series' recorded (safe) tags that `include` asks for; all of them when it is empty."""
    for keyword, value in tags.items():
        tag = tag_for_keyword(keyword)
        if tag is None or Tag(tag) in ds:
            continue
        if include and Tag(tag) not in include:
            continue
        _set(ds, Tag(tag), value)


def _text(value: Any) -> str | None:
    """An explanation as one text: its lines (a list) one after the other."""
    if isinstance(value, list):
        return "\n".join(str(line) for line in value) or None
    return None if value is None else str(value)


def study_result(exam: Exam, retrieve_url: str) -> dict[str, Any]:
    """A QIDO-RS study result (PS3.18 Table 10.6.3-3's attributes voxelpipe holds)."""
    ds = Dataset()
    ds.StudyInstanceUID = exam.study_instance_uid
    ds.ModalitiesInStudy = exam.modalities
    ds.NumberOfStudyRelatedSeries = len(exam.series)
    ds.NumberOfStudyRelatedInstances = exam.instances
    ds.RetrieveURL = retrieve_url
    _private(ds, {"study_id": exam.study_id})
    return ds.to_json_dict()


def series_result(
    series: ExamSeries, retrieve_url: str, include: Sequence[BaseTag] | None = None
) -> dict[str, Any]:
    """A QIDO-RS series result: PS3.18 Table 10.6.3-4's attributes voxelpipe holds, the recorded
    tags `include` names (None: none; empty: all), and the rules' decision in our private block."""
    s = series.series
    tags = s.get("tags") or {}
    decision = s.get("decision") or {}
    ds = Dataset()
    ds.StudyInstanceUID = series.study_instance_uid
    ds.SeriesInstanceUID = series.series_instance_uid
    _set(ds, Tag("Modality"), series.modality)
    _set(ds, Tag("SeriesNumber"), s.get("series_number"))
    _set(ds, Tag("SeriesDescription"), tags.get("SeriesDescription"))
    ds.NumberOfSeriesRelatedInstances = int(s.get("instances") or 0)
    ds.RetrieveURL = retrieve_url
    if include is not None:
        _include(ds, tags, include)
    selected = decision.get("selected")
    _private(
        ds,
        {
            "study_id": s.get("study_id"),
            "selected": None if selected is None else ("YES" if selected else "NO"),
            "rule": decision.get("rule"),
            "series_class": s.get("series_class") or tags.get("SeriesClass"),
            "explanation": _text(decision.get("explanation")),
        },
    )
    return ds.to_json_dict()


# --- WADO-RS metadata -----------------------------------------------------------------------------

# Binary values longer than this are left out of metadata (PS3.18 would name them by BulkDataURI;
# voxelpipe serves whole instances only).
BULK_DATA_BYTES: Final = 1024
_BINARY_VRS: Final = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})


def _drop_bulk(ds: Dataset) -> None:
    for element in list(ds):
        if element.VR == "SQ":
            for item in element.value:
                _drop_bulk(item)
        elif element.VR in _BINARY_VRS and element.value is not None and len(element.value) > BULK_DATA_BYTES:
            del ds[element.tag]


def instance_metadata(header: Dataset) -> dict[str, Any]:
    """An instance's metadata (no pixels, no bulk data) as DICOM JSON; `header` loses its bulk data."""
    _drop_bulk(header)
    return header.to_json_dict(suppress_invalid_tags=True)
