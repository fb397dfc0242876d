"""Ingest for DICOM studies: each object is checked as it lands; the exam when all have arrived.

An uploaded DICOM study declares its files (many, or one .zip); a network exam's arrive by STOW-RS
or C-STORE (pipeline/receive.py). Each object's header is read (a range read first) and its
instances recorded once per SOP Instance UID. The exam completes when every declared file has
arrived or on `POST /studies/{id}/complete` — or, for a network exam, when its transfers are over
(pipeline/transfers.py). Then its series are routed (pipeline/exams.py), the selected series'
checks run while the study can still be REJECTED, and it is queued. No timeout guesses.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from voxelpipe import tracking
from voxelpipe.dicom import (
    InstanceSummary,
    NeedMoreData,
    UidMap,
    read_instance_header,
    read_series_zip,
)
from voxelpipe.keys import parse_upload_key, quarantine_key
from voxelpipe.limits import HEADER_RANGE_BYTES, Limits
from voxelpipe.messages import UploadedObject
from voxelpipe.pipeline.exams import INSTANCE_PREFIX, complete_dicom_study
from voxelpipe.pipeline.lifecycle import (
    INGEST_ACTOR,
    ExamAdapters,
    IngestOutcome,
    check_analyses,
    check_manifest,
    quarantine_uploads,
    reject_study,
    uid_map,
)
from voxelpipe.pipeline.transfers import complete_if_over
from voxelpipe.ports import ObjectInfo, ObjectStorage
from voxelpipe.records import ObjectRecord, StudyRecord
from voxelpipe.rejections import ReasonCode, Rejected
from voxelpipe.status import StudyStatus
from voxelpipe.upload_files import check_upload_name

FILE_PREFIX = "file#"
_UID_FIELDS = ("sop_instance_uid", "series_instance_uid", "study_instance_uid", "frame_of_reference_uid")


def _pseudonymous(summary: InstanceSummary, uids: UidMap) -> dict[str, Any]:
    """The summary as stored: UIDs replaced by their study-keyed hashes (equal stays equal)."""
    fields = dataclasses.asdict(summary)
    for name in _UID_FIELDS:
        if fields[name]:
            fields[name] = uids(fields[name])
    return fields


def _header(data: bytes, object_size: int | None = None) -> InstanceSummary | None:
    """One object's header; None for an object without pixels (a report sent with the images)."""
    try:
        return read_instance_header(data, object_size=object_size)
    except Rejected as rejected:
        if rejected.reason is ReasonCode.NO_PIXEL_DATA:
            return None
        raise


def _read_instances(
    key: str, filename: str, info: ObjectInfo, storage: ObjectStorage, limits: Limits
) -> list[InstanceSummary]:
    """The image instances of one object (a .zip holds many), from a range read where it suffices."""
    if filename.lower().endswith(".zip"):
        headers = [_header(data) for _, data in read_series_zip(storage.read(key), limits)]
    else:
        try:
            headers = [_header(storage.read(key, first_bytes=HEADER_RANGE_BYTES), object_size=info.size)]
        except NeedMoreData:
            headers = [_header(storage.read(key))]
    return [header for header in headers if header is not None]


def ingest_dicom_object(
    upload: UploadedObject, study: StudyRecord, info: ObjectInfo, exam: ExamAdapters
) -> IngestOutcome:
    store, storage, limits = exam.store, exam.storage, exam.limits
    study_id, attempt = study.study_id, int(study.attempt)
    # A network exam (no manifest) takes instances whatever its status: those that arrive after
    # it ended open its next attempt (pipeline/transfers.py). An upload's study is done with them.
    declared = study.manifest is not None
    if declared and study.status != StudyStatus.AWAITING_UPLOAD:
        # Late for its study (rejected, or complete): out of uploads/, with a note.
        storage.move(upload.key, quarantine_key(upload.key))
        tracking.audit(
            store,
            study_id,
            "upload_ignored",
            actor=INGEST_ACTOR,
            source=upload.key,
            detail={"why": study.status},
        )
        return IngestOutcome(upload.key, study_id, str(study.status), detail="study no longer awaits uploads")
    try:
        object_name = check_upload_name(parse_upload_key(upload.key).filename)
        check_manifest(object_name, info.size, study.manifest)
        check_analyses(study)
        if info.size > limits.max_upload_bytes:
            raise Rejected(
                ReasonCode.TOO_LARGE,
                f"{object_name} is {info.size} bytes; the limit is {limits.max_upload_bytes}",
            )
        instances = _read_instances(upload.key, object_name, info, storage, limits)
    except Rejected as rejected:
        if not declared:
            # One bad object of a network exam (its sender was told at once, if it could be):
            # out of the way, and the exam goes on without it.
            storage.move(upload.key, quarantine_key(upload.key))
            store.count_arrival(study_id)
            tracking.audit(
                store,
                study_id,
                "instance_refused",
                actor=INGEST_ACTOR,
                source=upload.key,
                detail={"reason": rejected.reason.value, "detail": rejected.detail},
            )
            complete_if_over(study_id, exam, source=upload.key)
            status = str(study.status)
            return IngestOutcome(upload.key, study_id, status, rejected.reason.value, rejected.detail)
        quarantine_uploads(storage, study)
        return reject_study(store, study_id, attempt, rejected, None, source=upload.key)

    uids = uid_map(study)
    duplicates = sum(
        not store.record_object(
            ObjectRecord(
                study_id,
                INSTANCE_PREFIX + uids(instance.sop_instance_uid),
                source=upload.key,
                summary=_pseudonymous(instance, uids),
            )
        )
        for instance in instances
    )
    if duplicates:
        tracking.audit(
            store,
            study_id,
            "duplicate_instances",
            actor=INGEST_ACTOR,
            source=upload.key,
            detail={"count": duplicates},
        )
    if not store.record_object(ObjectRecord(study_id, FILE_PREFIX + object_name, source=upload.key)):
        return IngestOutcome(upload.key, study_id, str(study.status), detail="file seen before")
    arrived = store.count_arrival(study_id)
    if not declared:
        completed = complete_if_over(study_id, exam, source=upload.key)
        return completed or IngestOutcome(
            upload.key, study_id, str(study.status), detail=f"{arrived} objects; the transfer goes on"
        )
    expected = len(study.manifest or [])
    if arrived >= expected:
        return complete_dicom_study(study_id, exam, source=upload.key)
    return IngestOutcome(
        upload.key, study_id, StudyStatus.AWAITING_UPLOAD.value, detail=f"{arrived} of {expected} files"
    )
