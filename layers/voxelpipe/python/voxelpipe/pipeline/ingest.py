"""Ingest: validate an uploaded object, then reject it or queue its study."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pynamodb.expressions.update import Action

from voxelpipe import tracking
from voxelpipe.adapters import queues
from voxelpipe.adapters.storage import ObjectInfo, Storage
from voxelpipe.analyses import CATALOGUE, DEFAULT_ANALYSES
from voxelpipe.inference.registry import model_analyses
from voxelpipe.keys import (
    parse_study_prefix,
    parse_upload_key,
    quarantine_key,
    upload_prefix,
)
from voxelpipe.limits import HEADER_RANGE_BYTES, Limits
from voxelpipe.messages import Priority, WorkItem
from voxelpipe.records import StudyRecord, TaskRecord
from voxelpipe.rejections import ReasonCode, Rejected
from voxelpipe.status import StudyStatus
from voxelpipe.upload_files import check_upload_name
from voxelpipe.validation import check_header, check_volume_stream

ACTOR = "ingest"


@dataclass(frozen=True)
class UploadedObject:
    """One object that landed; (bucket, key, version) is its idempotency key."""

    bucket: str
    key: str
    version: str


@dataclass(frozen=True)
class IngestOutcome:
    key: str
    study_id: str | None
    status: str
    reason: str | None = None
    detail: str | None = None


def _study_for(study_id: str, tenant: str) -> StudyRecord:
    study = tracking.get_study(study_id)
    if study is None:
        # Uploaded without registering the study first (POST /studies): the defaults apply.
        study = tracking.create_study(
            study_id, tenant, analyses=DEFAULT_ANALYSES, priority=Priority.NORMAL.value
        )
        # None: another upload created it between our read and write.
        study = study or tracking.get_study(study_id)
    assert study is not None
    return study


def check_manifest(filename: str, size: int, manifest: list[dict[str, Any]] | None) -> None:
    """The object must be a file the study declared, of the size declared.

    Presigned POST policies limit the size in AWS, but nothing stops other writers (and moto
    does not enforce policies), so the declaration is checked again here.
    """
    if manifest is None:
        return
    declared = {entry["name"]: int(entry["size"]) for entry in manifest}
    if filename not in declared:
        raise Rejected(
            ReasonCode.INVALID_NAME,
            f"{filename!r} is not in the study's manifest ({', '.join(sorted(declared))})",
        )
    if size > declared[filename]:
        raise Rejected(
            ReasonCode.TOO_LARGE, f"{filename} is {size} bytes; the manifest declared {declared[filename]}"
        )
    if size < declared[filename]:
        raise Rejected(
            ReasonCode.TRUNCATED, f"{filename} is {size} bytes; the manifest declared {declared[filename]}"
        )


def check_analyses(study: StudyRecord) -> None:
    # model:NAME is known while the registry has a READY version of NAME.
    models = model_analyses(study.analyses)
    unknown = [name for name in study.analyses if name not in CATALOGUE and name not in models]
    if unknown:
        raise Rejected(
            ReasonCode.UNKNOWN_ANALYSIS,
            f"unknown analyses {', '.join(unknown)}; known: {', '.join(sorted([*CATALOGUE, *models]))}",
        )


def _validate(
    upload: UploadedObject, study: StudyRecord, info: ObjectInfo, storage: Storage, limits: Limits
) -> dict[str, object]:
    filename = check_upload_name(parse_upload_key(upload.key).filename)
    check_manifest(filename, info.size, study.manifest)
    check_analyses(study)
    if info.size > limits.max_upload_bytes:
        raise Rejected(
            ReasonCode.TOO_LARGE, f"the upload is {info.size} bytes; the limit is {limits.max_upload_bytes}"
        )
    # Header first, from a range read: most bad uploads are refused without reading them whole.
    check_header(storage.read(upload.key, first_bytes=HEADER_RANGE_BYTES), info.size, limits)
    # Then the whole object, streamed: validation's memory stays bounded whatever the upload.
    volume = check_volume_stream(storage.iter_chunks(upload.key), info.size, limits)
    return {
        "size_bytes": info.size,
        "sha256": volume.sha256,
        "format": f"nifti{volume.header.nifti_version}" + ("+gzip" if volume.header.compressed else ""),
        "shape": list(volume.header.shape),
        "voxel_size_mm": list(volume.header.voxel_size_mm),
        "datatype": volume.header.datatype,
        "orientation": "".join(volume.header.orientation),
    }


def ingest_upload(upload: UploadedObject, storage: Storage, limits: Limits) -> IngestOutcome:
    """Validate one uploaded object and move its study to REJECTED or QUEUED."""
    prefix = parse_study_prefix(upload.key)
    if prefix is None:
        # No study can be named, so nobody can be told: keep it out of uploads/ and say so in the logs.
        storage.move(upload.key, quarantine_key(upload.key))
        return IngestOutcome(
            upload.key,
            None,
            "IGNORED",
            ReasonCode.INVALID_NAME.value,
            "key outside uploads/{tenant}/{study_id}/",
        )
    tenant, study_id = prefix
    info = storage.head(upload.key)
    study = _study_for(study_id, tenant)
    if study.tenant != tenant:
        storage.move(upload.key, quarantine_key(upload.key))
        return IngestOutcome(
            upload.key, None, "IGNORED", ReasonCode.INVALID_NAME.value, "the study belongs to another tenant"
        )

    if study.input_format == "dicom":
        from voxelpipe.pipeline.ingest_dicom import ingest_dicom_object

        return ingest_dicom_object(upload, study, info, storage, limits)

    attempt = int(study.attempt)
    try:
        tracking.transition(study_id, attempt, StudyStatus.VALIDATING)
    except tracking.TransitionRefused as refused:
        current = refused.current
        if (
            current is not None
            and current.status == StudyStatus.QUEUED
            and current.attempt == attempt
            and current.input_key == upload.key
        ):
            # A retry after a failure between QUEUED and the send: send again (dispatch dedups).
            enqueue_study(current)
            return IngestOutcome(upload.key, study_id, StudyStatus.QUEUED.value, detail="re-sent")
        # The study is past validation (a re-upload, or a late duplicate): record it and leave it be.
        tracking.audit(
            study_id, "upload_ignored", actor=ACTOR, source=upload.key, detail={"why": str(refused)}
        )
        return IngestOutcome(upload.key, study_id, str(study.status), detail="study already past validation")

    task = tracking.start_task(study_id, attempt, "validate")
    try:
        described = _validate(upload, study, info, storage, limits)
    except Rejected as rejected:
        storage.move(upload.key, quarantine_key(upload.key))
        return reject_study(study_id, attempt, rejected, task, source=upload.key)

    return queue_study(study_id, attempt, upload.key, described, task, source=upload.key)


def quarantine_uploads(study: StudyRecord, storage: Storage) -> None:
    """Move every object the study's upload prefix holds to quarantine/, out of the pipeline's way."""
    for key in storage.list_keys(upload_prefix(study.tenant, study.study_id)):
        storage.move(key, quarantine_key(key))


def reject_study(
    study_id: str,
    attempt: int,
    rejected: Rejected,
    task: TaskRecord | None,
    *,
    source: str,
    actor: str = ACTOR,
) -> IngestOutcome:
    """REJECTED with the reason code and its sentence, on the study, its task and the audit trail
    (by ingest, or by Prepare for a series that proves bad only when decoded)."""
    if task is not None:  # ended first, so that a REJECTED study never shows a RUNNING task
        tracking.fail_task(
            task, {"type": "Rejected", "reason": rejected.reason.value, "message": rejected.detail}
        )
    tracking.transition(
        study_id,
        attempt,
        StudyStatus.REJECTED,
        changes=[
            StudyRecord.reason.set(rejected.reason.value),
            StudyRecord.reason_detail.set(rejected.detail),
        ],
    )
    tracking.audit(
        study_id,
        "rejected",
        actor=actor,
        source=source,
        detail={"reason": rejected.reason.value, "detail": rejected.detail},
    )
    return IngestOutcome(source, study_id, StudyStatus.REJECTED.value, rejected.reason.value, rejected.detail)


def queue_study(
    study_id: str, attempt: int, input_key: str, described: dict[str, Any], task: TaskRecord, *, source: str
) -> IngestOutcome:
    """VALIDATED with what validation learnt, then QUEUED and sent to its work queue."""
    changes: list[Action] = [StudyRecord.input_key.set(input_key), StudyRecord.input.set(described)]
    tracking.transition(study_id, attempt, StudyStatus.VALIDATED, changes=changes)
    tracking.finish_task(task, detail=described)
    # QUEUED before the send: the execution may start (and move the study on) before send returns.
    queued = tracking.transition(study_id, attempt, StudyStatus.QUEUED)
    tracking.audit(study_id, "queued", actor=ACTOR, source=source, detail={"sha256": described.get("sha256")})
    enqueue_study(queued)
    return IngestOutcome(source, study_id, StudyStatus.QUEUED.value)


def enqueue_study(study: StudyRecord) -> None:
    """Send the study's current attempt to its priority's work queue."""
    assert study.input_key is not None
    queues.enqueue(
        WorkItem(
            study_id=study.study_id,
            attempt=int(study.attempt),
            tenant=study.tenant,
            input_key=study.input_key,
            analyses=list(study.analyses),
            priority=Priority(study.priority),
        )
    )
