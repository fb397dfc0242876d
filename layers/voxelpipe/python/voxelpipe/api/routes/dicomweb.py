"""DICOMweb (PS3.18): STOW-RS to send an exam in, QIDO-RS to find the tenant's exams and series,
WADO-RS to fetch the de-identified objects voxelpipe holds (docs/dicomweb.md).

Every UID these routes answer with or are asked about is a pseudonymous one: STOW-RS de-identifies
at this boundary, as an upload's ingest does, and answers with the UIDs it stored. Tenant-scoped
like every route: another tenant's UIDs are a 404, as unknown ones.

pydicom (voxelpipe.dicom.web) is imported by the routes that need it, not at the API's cold start.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Annotated, Any, Final

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from voxelpipe import queries
from voxelpipe.api.auth import Action, Principal
from voxelpipe.api.dependencies import Bucket, Caller, Store, requires
from voxelpipe.api.problems import Problem
from voxelpipe.api.viewer_data import public_base_url
from voxelpipe.keys import derived_key
from voxelpipe.limits import HEADER_RANGE_BYTES
from voxelpipe.ports import ObjectStorage, StudyStore

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

    from voxelpipe.dicom.web import Exam, ExamSeries
    from voxelpipe.pipeline.receive import InstanceReceiver

router = APIRouter(prefix="/dicomweb", tags=["dicomweb"])

DICOM_JSON: Final = "application/dicom+json"
# What API Gateway must pass to the function (and back) as binary (infra/api.py).
BINARY_MEDIA_TYPES: Final = ("multipart/related", "application/dicom")
# The most a request or response body may hold here. API Gateway takes 10 MB, but the API is a
# Lambda function behind it: its synchronous invocation carries at most 6 MB, and a binary body
# travels base64-encoded in it (4/3 the size). 4 MiB leaves room for the event's other fields.
# Larger: the presigned upload (POST /studies with input_format dicom) and the results' links.
MAX_BODY_BYTES: Final = 4 * 1024 * 1024
# Where derived DICOM outputs (SEG, SR, PDF) are written, under derived/{study_id}/.
DERIVED_DICOM_PREFIX: Final = "dicom/"
# Instances in one STOW-RS request: each is a write and a few table updates, and the request must
# end within API Gateway's 29 s.
MAX_PARTS: Final = 200
# QIDO-RS reads the tenant's studies newest first, up to this many, to find its exams.
MAX_SCANNED_STUDIES: Final = 5000

PRESIGNED_ALTERNATIVE: Final = (
    "send larger exams through the presigned upload: POST /studies with input_format 'dicom' and a "
    "manifest of the files, upload each to its URL, then POST /studies/{study_id}/complete "
    "(docs/api.md), or `voxelpipe upload FOLDER`"
)


def instance_receiver(store: Store, bucket: Bucket) -> Any:
    """The receive use case with this deployment's adapters (imported here: pydicom is heavy)."""
    from voxelpipe.adapters import secrets
    from voxelpipe.adapters.transfers import DynamoTransferStore
    from voxelpipe.limits import Limits
    from voxelpipe.pipeline.receive import InstanceReceiver

    return InstanceReceiver(
        store, bucket, DynamoTransferStore(), Limits.from_environment(), pseudonyms=secrets.pseudonyms()
    )


# The use case, built per request (tests may override it).
Receiver = Annotated[Any, Depends(instance_receiver)]


# --- content negotiation --------------------------------------------------------------------------


def _accepted(request: Request) -> list[tuple[str, dict[str, str]]]:
    from voxelpipe.dicom.web import media_type_parameters

    header = request.headers.get("accept") or "*/*"
    return [media_type_parameters(value) for value in header.split(",") if value.strip()]


def _require_json(request: Request) -> None:
    """QIDO-RS and metadata answer application/dicom+json (application/json too): 406 otherwise."""
    accepted = {media for media, _ in _accepted(request)}
    if not accepted & {DICOM_JSON, "application/json", "application/*", "*/*"}:
        raise Problem(
            406,
            "not_acceptable",
            "No acceptable media type",
            f"this resource is {DICOM_JSON}; the request accepts {sorted(accepted)}",
        )


def _require_multipart_dicom(request: Request, syntaxes: set[str]) -> None:
    """WADO-RS instances are multipart/related; type="application/dicom", in the transfer syntax
    they are stored in (`syntaxes`): 406 for anything else."""
    from voxelpipe.dicom.web import DICOM, MULTIPART_RELATED

    for media, params in _accepted(request):
        if media not in ("*/*", "multipart/*", MULTIPART_RELATED):
            continue
        if params.get("type", DICOM).lower() not in (DICOM, "application/*", "*/*"):
            continue
        wanted = params.get("transfer-syntax", "*")
        if wanted == "*" or wanted in syntaxes:
            return
    raise Problem(
        406,
        "not_acceptable",
        "No acceptable media type",
        f'instances are {MULTIPART_RELATED}; type="{DICOM}" in the transfer syntax they are stored in '
        f"({', '.join(sorted(syntaxes)) or 'none held'}); transcoding and rendered media are not offered",
    )


def _dicom_json(content: Any, status: int = 200) -> JSONResponse:
    return JSONResponse(content, status_code=status, media_type=DICOM_JSON)


# --- STOW-RS --------------------------------------------------------------------------------------


async def _body(request: Request) -> bytes:
    """The request's body, refused (413) past MAX_BODY_BYTES before it is read whole."""
    too_large = Problem(
        413,
        "payload_too_large",
        "The request is too large for STOW-RS here",
        f"at most {MAX_BODY_BYTES} bytes in one request: split the exam over several requests, or "
        + PRESIGNED_ALTERNATIVE,
        max_bytes=MAX_BODY_BYTES,
    )
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise too_large
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
        if len(body) > MAX_BODY_BYTES:
            raise too_large
    return bytes(body)


def _check_content_type(request: Request) -> str:
    from voxelpipe.dicom.web import DICOM, MULTIPART_RELATED, media_type_parameters

    content_type = request.headers.get("content-type") or ""
    media, params = media_type_parameters(content_type) if content_type else ("", {})
    if media != MULTIPART_RELATED or params.get("type", "").lower() != DICOM:
        raise Problem(
            415,
            "unsupported_media_type",
            'STOW-RS takes multipart/related; type="application/dicom"',
            f"the request is {content_type[:200]!r}: send each instance as a DICOM Part 10 part of a "
            f'{MULTIPART_RELATED}; type="{DICOM}" body (the JSON and XML metadata forms are not accepted)',
        )
    return content_type


def _store(
    request_base: str,
    caller: Principal,
    receiver: InstanceReceiver,
    content_type: str,
    body: bytes,
    study_uid: str | None,
) -> tuple[int, dict[str, Any]]:
    """Receive every part as one transfer; the Store Instances response and its HTTP status."""
    from voxelpipe.dicom.web import (
        DICOM,
        FailedInstance,
        FailureReason,
        InvalidMultipart,
        StoredInstance,
        failure_reason,
        parse_multipart_related,
        read_header,
        store_response,
    )
    from voxelpipe.pipeline.receive import TransferSource
    from voxelpipe.rejections import Rejected

    try:
        parts = parse_multipart_related(content_type, body)
    except InvalidMultipart as error:
        raise Problem(
            400, "invalid_multipart", "The body is not a multipart/related body", str(error)
        ) from error
    if len(parts) > MAX_PARTS:
        raise Problem(
            413,
            "too_many_instances",
            "Too many instances for one STOW-RS request",
            f"{len(parts)} parts; at most {MAX_PARTS} a request: split the exam over several requests, or "
            + PRESIGNED_ALTERNATIVE,
            max_parts=MAX_PARTS,
        )
    stored: list[StoredInstance] = []
    failed: list[FailedInstance] = []
    study_uids: set[str] = set()
    with receiver.open_transfer(caller.tenant, TransferSource.STOW, actor=caller.subject) as transfer:
        for part in parts:
            header = read_header(part.data)
            sop_class = str(header.get("SOPClassUID", "")) if header is not None else None
            if part.content_type not in ("", DICOM):
                failed.append(FailedInstance(sop_class, FailureReason.CANNOT_UNDERSTAND))
                continue
            # (An unreadable part is the receiver's to refuse, with its reason.)
            if study_uid is not None and header is not None and header.get("StudyInstanceUID") != study_uid:
                # POST /dicomweb/studies/{study}: every instance must be of that study.
                failed.append(FailedInstance(sop_class, FailureReason.DATA_SET_DOES_NOT_MATCH))
                continue
            try:
                received = transfer.receive(part.data)
            except Rejected as rejected:
                failed.append(FailedInstance(sop_class, failure_reason(rejected.reason)))
                continue
            study_uids.add(received.study_instance_uid)
            stored.append(
                StoredInstance(
                    sop_class_uid=received.sop_class_uid,
                    sop_instance_uid=received.sop_instance_uid,
                    retrieve_url=f"{request_base}/dicomweb/studies/{received.study_instance_uid}/series/"
                    f"{received.series_instance_uid}/instances/{received.sop_instance_uid}",
                )
            )
    only_study = next(iter(study_uids)) if len(study_uids) == 1 else None
    retrieve_url = f"{request_base}/dicomweb/studies/{only_study}" if only_study else None
    # PS3.18 10.5.3: 200 every instance stored, 202 some, 409 none.
    status = 200 if not failed else (202 if stored else 409)
    return status, store_response(stored, failed, retrieve_url)


def _stow_access() -> dict[str, Any]:
    """Who may store (uploaders, admins), and the answers: the Store Instances response for 200,
    202 and 409 (application/dicom+json), problem details for the rest."""
    access = requires(Action.STOW, 400, 413, 415, audit="dicomweb.store")
    store_response: dict[str, Any] = {"content": {DICOM_JSON: {}}}
    access["responses"] |= {
        200: {"description": "every instance stored", **store_response},
        202: {"description": "some instances stored, others failed (FailedSOPSequence)", **store_response},
        409: {"description": "no instance stored (FailedSOPSequence says why)", **store_response},
    }
    return access


@router.post("/studies", **_stow_access())
async def store_instances(request: Request, caller: Caller, receiver: Receiver) -> JSONResponse:
    """STOW-RS Store Instances: a multipart/related; type="application/dicom" body, one DICOM
    Part 10 instance a part, received as one transfer. 200: all stored, 202: some, 409: none; the
    response (application/dicom+json) names the stored instances by their de-identified UIDs."""
    content_type = _check_content_type(request)
    body = await _body(request)
    status, response = await run_in_threadpool(
        _store, public_base_url(request), caller, receiver, content_type, body, None
    )
    return _dicom_json(response, status)


@router.post("/studies/{study_uid}", **_stow_access())
async def store_study_instances(
    study_uid: str, request: Request, caller: Caller, receiver: Receiver
) -> JSONResponse:
    """STOW-RS to one study: as POST /dicomweb/studies, and an instance of another study (its
    StudyInstanceUID as sent, before de-identification) fails with 0xA900."""
    content_type = _check_content_type(request)
    body = await _body(request)
    status, response = await run_in_threadpool(
        _store, public_base_url(request), caller, receiver, content_type, body, study_uid
    )
    return _dicom_json(response, status)


# --- the tenant's exams ---------------------------------------------------------------------------


def _exams(store: StudyStore, tenant: str) -> Iterator[Exam]:
    """The tenant's exams (studies with a `dicom` document), newest first."""
    from voxelpipe.dicom.web import Exam

    for record in queries.tenant_records(store, tenant, max_records=MAX_SCANNED_STUDIES):
        if record.dicom and not record.exam_id:
            yield Exam(record.study_id, record.dicom)


def _exam(store: StudyStore, tenant: str, study_uid: str) -> Exam:
    exam = next((e for e in _exams(store, tenant) if e.study_instance_uid == study_uid), None)
    if exam is None:
        raise Problem(404, "dicom_study_not_found", "No such DICOM study")
    return exam


def _series_of(exam: Exam, series_uid: str) -> ExamSeries:
    series = next((s for s in exam.series if s.series_instance_uid == series_uid), None)
    if series is None:
        raise Problem(404, "dicom_series_not_found", "No such DICOM series in this study")
    return series


def _include(includefield: list[str] | None) -> list[Any] | None:
    from voxelpipe.api.problems import invalid_request
    from voxelpipe.dicom.web import UnknownAttribute, attribute_tag

    if not includefield:
        return None
    names = [name.strip() for value in includefield for name in value.split(",") if name.strip()]
    if "all" in names:
        return []
    try:
        return [attribute_tag(name) for name in names]
    except UnknownAttribute as error:
        raise invalid_request("includefield", str(error)) from error


Limit = Annotated[int, Query(ge=1, le=1000, description="at most this many results")]
Offset = Annotated[int, Query(ge=0, description="skip this many results")]
IncludeField = Annotated[
    list[str] | None,
    Query(description="more attributes of each series (keywords or tags, comma-separated), or 'all'"),
]


# --- QIDO-RS --------------------------------------------------------------------------------------


@router.get("/studies", **requires(Action.READ, 406, audit="dicomweb.search"))
def search_studies(
    request: Request,
    caller: Caller,
    store: Store,
    study_instance_uid: Annotated[str | None, Query(alias="StudyInstanceUID")] = None,
    modalities_in_study: Annotated[str | None, Query(alias="ModalitiesInStudy")] = None,
    limit: Limit = 100,
    offset: Offset = 0,
    includefield: IncludeField = None,
) -> JSONResponse:
    """QIDO-RS Search for Studies over the tenant's exams (de-identified UIDs)."""
    from voxelpipe.dicom.web import matching_exams, study_result, uid_list, value_list

    _require_json(request)
    _include(includefield)  # checked; a study result holds every study attribute voxelpipe has
    base = public_base_url(request)
    exams = matching_exams(
        _exams(store, caller.tenant), uid_list(study_instance_uid), value_list(modalities_in_study)
    )
    page = exams[offset : offset + limit]
    return _dicom_json([study_result(e, f"{base}/dicomweb/studies/{e.study_instance_uid}") for e in page])


def _series_results(
    request: Request,
    series: list[ExamSeries],
    series_uid: str | None,
    modality: str | None,
    limit: int,
    offset: int,
    includefield: list[str] | None,
) -> JSONResponse:
    from voxelpipe.dicom.web import matching_series, series_result, uid_list, value_list

    _require_json(request)
    include = _include(includefield)
    base = public_base_url(request)
    found = matching_series(series, uid_list(series_uid), value_list(modality))[offset : offset + limit]
    return _dicom_json(
        [
            series_result(
                s,
                f"{base}/dicomweb/studies/{s.study_instance_uid}/series/{s.series_instance_uid}",
                include,
            )
            for s in found
        ]
    )


@router.get("/studies/{study_uid}/series", **requires(Action.READ, 404, 406, audit="dicomweb.search"))
def search_study_series(
    study_uid: str,
    request: Request,
    caller: Caller,
    store: Store,
    series_instance_uid: Annotated[str | None, Query(alias="SeriesInstanceUID")] = None,
    modality: Annotated[str | None, Query(alias="Modality")] = None,
    limit: Limit = 100,
    offset: Offset = 0,
    includefield: IncludeField = None,
) -> JSONResponse:
    """QIDO-RS Search for Series of one study: each with the rules' decision (private block)."""
    exam = _exam(store, caller.tenant, study_uid)
    return _series_results(request, exam.series, series_instance_uid, modality, limit, offset, includefield)


@router.get("/series", **requires(Action.READ, 406, audit="dicomweb.search"))
def search_series(
    request: Request,
    caller: Caller,
    store: Store,
    study_instance_uid: Annotated[str | None, Query(alias="StudyInstanceUID")] = None,
    series_instance_uid: Annotated[str | None, Query(alias="SeriesInstanceUID")] = None,
    modality: Annotated[str | None, Query(alias="Modality")] = None,
    limit: Limit = 100,
    offset: Offset = 0,
    includefield: IncludeField = None,
) -> JSONResponse:
    """QIDO-RS Search for Series across the tenant's exams."""
    from voxelpipe.dicom.web import matching_exams, uid_list

    exams = matching_exams(_exams(store, caller.tenant), uid_list(study_instance_uid), None)
    series = [s for exam in exams for s in exam.series]
    return _series_results(request, series, series_instance_uid, modality, limit, offset, includefield)


# --- WADO-RS --------------------------------------------------------------------------------------


def _object_keys(bucket: ObjectStorage, exam: Exam, series_uid: str) -> list[str]:
    """The DICOM objects voxelpipe holds that may belong to the series: the de-identified copies
    of the study that processed it, and derived DICOM outputs of the exam's studies."""
    from voxelpipe.pipeline.prepare import DEIDENTIFIED_PREFIX

    processed = next((s for s in exam.series if s.series_instance_uid == series_uid), None)
    if processed is not None:
        study_ids = [processed.series.get("study_id")]
    else:  # a derived series (a segmentation, a report) of one of the exam's studies
        study_ids = [s.series.get("study_id") for s in exam.series]
    prefixes = {
        derived_key(str(study_id), prefix)
        for study_id in study_ids
        if study_id
        for prefix in (DEIDENTIFIED_PREFIX, DERIVED_DICOM_PREFIX)
    }
    return sorted({key for prefix in prefixes for key in bucket.list_keys(prefix) if key.endswith(".dcm")})


def _header(bucket: ObjectStorage, key: str) -> Dataset | None:
    """An object's header from its first bytes, or from the whole object when it runs past them."""
    from voxelpipe.dicom.web import read_header

    head = bucket.read(key, first_bytes=HEADER_RANGE_BYTES)
    header = read_header(head)
    if header is None and len(head) >= HEADER_RANGE_BYTES:
        return read_header(bucket.read(key))
    return header


def _instances(
    bucket: ObjectStorage, exam: Exam, series_uid: str, sop_uid: str | None = None
) -> list[tuple[str, Dataset]]:
    """(key, header) of the series' objects (or its one instance `sop_uid`): 404 when none."""
    found = []
    for key in _object_keys(bucket, exam, series_uid):
        header = _header(bucket, key)
        if header is None or str(header.get("SeriesInstanceUID", "")) != series_uid:
            continue
        if sop_uid is not None and str(header.get("SOPInstanceUID", "")) != sop_uid:
            continue
        found.append((key, header))
    if not found:
        if sop_uid is not None:
            raise Problem(404, "dicom_instance_not_found", "No such DICOM instance held")
        raise Problem(
            404,
            "dicom_series_not_found",
            "No DICOM objects of this series are held",
            "voxelpipe keeps de-identified copies of the series it processed (and its derived objects); "
            "a series the rules did not select is described by QIDO-RS only",
        )
    return found


def _too_large(detail: str) -> Problem:
    return Problem(
        413,
        "response_too_large",
        "The answer is too large for one response",
        detail + f" (at most {MAX_BODY_BYTES} bytes): retrieve each instance at "
        "/dicomweb/studies/{study}/series/{series}/instances/{instance}, or fetch the study's "
        "artifacts through GET /studies/{study_id}/results (presigned links)",
        max_bytes=MAX_BODY_BYTES,
    )


def _multipart(bucket: ObjectStorage, request: Request, found: list[tuple[str, Dataset]]) -> Response:
    from voxelpipe.dicom.web import DEFAULT_TRANSFER_SYNTAX, DICOM, multipart_related

    syntaxes = {str(h.file_meta.get("TransferSyntaxUID", DEFAULT_TRANSFER_SYNTAX)) for _, h in found}
    _require_multipart_dicom(request, syntaxes)
    parts: list[tuple[bytes, str]] = []
    total = 0
    for key, header in found:
        data = bucket.read(key)
        total += len(data)
        if total > MAX_BODY_BYTES:
            raise _too_large(f"these {len(found)} instances hold more than {MAX_BODY_BYTES} bytes")
        syntax = str(header.file_meta.get("TransferSyntaxUID", DEFAULT_TRANSFER_SYNTAX))
        parts.append((data, f"{DICOM}; transfer-syntax={syntax}"))
    body, content_type = multipart_related(parts)
    return Response(body, media_type=content_type)


@router.get(
    "/studies/{study_uid}/series/{series_uid}",
    **requires(Action.READ, 404, 406, 413, audit="dicomweb.retrieve"),
)
def retrieve_series(
    study_uid: str, series_uid: str, request: Request, caller: Caller, store: Store, bucket: Bucket
) -> Response:
    """WADO-RS Retrieve Series: its de-identified instances, multipart/related; type="application/dicom"."""
    exam = _exam(store, caller.tenant, study_uid)
    return _multipart(bucket, request, _instances(bucket, exam, series_uid))


@router.get(
    "/studies/{study_uid}/series/{series_uid}/instances/{sop_uid}",
    **requires(Action.READ, 404, 406, 413, audit="dicomweb.retrieve"),
)
def retrieve_instance(
    study_uid: str,
    series_uid: str,
    sop_uid: str,
    request: Request,
    caller: Caller,
    store: Store,
    bucket: Bucket,
) -> Response:
    """WADO-RS Retrieve Instance: one de-identified instance, multipart/related."""
    exam = _exam(store, caller.tenant, study_uid)
    return _multipart(bucket, request, _instances(bucket, exam, series_uid, sop_uid))


@router.get(
    "/studies/{study_uid}/series/{series_uid}/metadata",
    **requires(Action.READ, 404, 406, 413, audit="dicomweb.metadata"),
)
def series_metadata(
    study_uid: str, series_uid: str, request: Request, caller: Caller, store: Store, bucket: Bucket
) -> JSONResponse:
    """WADO-RS Retrieve Series Metadata (application/dicom+json; no pixels, no bulk data)."""
    from voxelpipe.dicom.web import instance_metadata

    _require_json(request)
    exam = _exam(store, caller.tenant, study_uid)
    return _dicom_json([instance_metadata(header) for _, header in _instances(bucket, exam, series_uid)])


@router.get(
    "/studies/{study_uid}/series/{series_uid}/instances/{sop_uid}/metadata",
    **requires(Action.READ, 404, 406, audit="dicomweb.metadata"),
)
def instance_metadata_route(
    study_uid: str,
    series_uid: str,
    sop_uid: str,
    request: Request,
    caller: Caller,
    store: Store,
    bucket: Bucket,
) -> JSONResponse:
    """WADO-RS Retrieve Instance Metadata."""
    from voxelpipe.dicom.web import instance_metadata

    _require_json(request)
    exam = _exam(store, caller.tenant, study_uid)
    found = _instances(bucket, exam, series_uid, sop_uid)
    return _dicom_json([instance_metadata(header) for _, header in found])
