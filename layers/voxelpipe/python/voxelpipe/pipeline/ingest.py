"""Ingest: validate an uploaded object, then reject it or queue its study.

A NIfTI study completes with its one file; a DICOM study's objects are checked one by one and the
series when all have arrived (`ingest_dicom`).
"""

from __future__ import annotations

from dataclasses import asdict

from aws_lambda_powertools.metrics import MetricUnit

from voxelpipe import tracking
from voxelpipe.analyses import DEFAULT_ANALYSES
from voxelpipe.keys import parse_study_prefix, parse_upload_key, quarantine_key
from voxelpipe.limits import HEADER_RANGE_BYTES, Limits
from voxelpipe.messages import Priority, UploadedObject
from voxelpipe.observability import logger, metrics
from voxelpipe.pipeline.ingest_dicom import ingest_dicom_object
from voxelpipe.pipeline.lifecycle import (
    INGEST_ACTOR,
    ExamAdapters,
    IngestOutcome,
    check_analyses,
    check_manifest,
    enqueue_study,
    queue_study,
    reject_study,
)
from voxelpipe.ports import ObjectInfo, ObjectStorage, StudyStore, WorkQueues
from voxelpipe.records import StudyRecord
from voxelpipe.rejections import ReasonCode, Rejected
from voxelpipe.status import StudyStatus
from voxelpipe.study_data import writing_for
from voxelpipe.upload_files import check_upload_name
from voxelpipe.validation import check_header, check_volume_stream
from voxelpipe.wiring import Prefix


def _study_for(store: StudyStore, study_id: str, tenant: str) -> StudyRecord:
    study = store.get_study(study_id)
    if study is None:
        # Uploaded without registering the study first (POST /studies): the defaults apply.
        study = tracking.create_study(
            store, study_id, tenant, analyses=DEFAULT_ANALYSES, priority=Priority.NORMAL.value
        )
        # None: another upload created it between our read and write.
        study = study or store.get_study(study_id)
    assert study is not None
    return study


def _validate(
    upload: UploadedObject, study: StudyRecord, info: ObjectInfo, storage: ObjectStorage, limits: Limits
) -> dict[str, object]:
    object_name = check_upload_name(parse_upload_key(upload.key).filename)
    check_manifest(object_name, info.size, study.manifest)
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


def ingest_upload(upload: UploadedObject, exam: ExamAdapters) -> IngestOutcome:
    """Validate one uploaded object and move its study to REJECTED or QUEUED; counted and logged."""
    outcome = _ingest(upload, exam)
    metrics.add_metric(name=f"Uploads{outcome.status.title()}", unit=MetricUnit.Count, value=1)
    if outcome.study_id is None:
        logger.warning("upload quarantined: no study can be told", extra=asdict(outcome))
    elif outcome.reason:
        logger.info("upload rejected", extra=asdict(outcome))
    return outcome


def _ingest(upload: UploadedObject, exam: ExamAdapters) -> IngestOutcome:
    store, storage = exam.store, exam.storage
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
    study = _study_for(store, study_id, tenant)
    if study.tenant != tenant:
        storage.move(upload.key, quarantine_key(upload.key))
        return IngestOutcome(
            upload.key, None, "IGNORED", ReasonCode.INVALID_NAME.value, "the study belongs to another tenant"
        )
    if study.status == StudyStatus.DELETED:
        # A late upload of a deleted study: nothing of the study is kept, this neither.
        storage.delete_all_versions(upload.key)
        return IngestOutcome(upload.key, study_id, study.status, detail="the study was deleted")
    # A study deleted while its upload was checked keeps nothing of it (a quarantined copy included).
    with writing_for(store, storage, study_id, writes=(Prefix.QUARANTINE,)):
        if study.input_format == "dicom":
            return ingest_dicom_object(upload, study, info, exam)
        return _ingest_nifti(upload, study, info, store, storage, exam.queues, exam.limits)


def _ingest_nifti(
    upload: UploadedObject,
    study: StudyRecord,
    info: ObjectInfo,
    store: StudyStore,
    storage: ObjectStorage,
    queues: WorkQueues,
    limits: Limits,
) -> IngestOutcome:
    """A NIfTI study completes with its one file: VALIDATING, then REJECTED or QUEUED."""
    study_id, attempt = study.study_id, int(study.attempt)
    try:
        tracking.transition(store, study_id, attempt, StudyStatus.VALIDATING)
    except tracking.TransitionRefused as refused:
        current = refused.current
        if (
            current is not None
            and current.status == StudyStatus.QUEUED
            and current.attempt == attempt
            and current.input_key == upload.key
        ):
            # A retry after a failure between QUEUED and the send: send again (dispatch dedups).
            enqueue_study(queues, current)
            return IngestOutcome(upload.key, study_id, StudyStatus.QUEUED.value, detail="re-sent")
        # The study is past validation (a re-upload, or a late duplicate): record it and leave it be.
        tracking.audit(
            store,
            study_id,
            "upload_ignored",
            actor=INGEST_ACTOR,
            source=upload.key,
            detail={"why": str(refused)},
        )
        return IngestOutcome(upload.key, study_id, str(study.status), detail="study already past validation")

    task = tracking.start_task(store, study_id, attempt, "validate")
    try:
        described = _validate(upload, study, info, storage, limits)
    except Rejected as rejected:
        storage.move(upload.key, quarantine_key(upload.key))
        return reject_study(store, study_id, attempt, rejected, task, source=upload.key)

    return queue_study(store, queues, study_id, attempt, upload.key, described, task, source=upload.key)
