"""What users do to a study after registering it: say its upload is complete, reprocess it, or
delete it and its data."""

from __future__ import annotations

from voxelpipe import tracking
from voxelpipe.adapters import executions
from voxelpipe.adapters.storage import Storage
from voxelpipe.keys import UploadKey, derived_key, quarantine_key, upload_prefix, work_prefix
from voxelpipe.limits import Limits
from voxelpipe.pipeline.ingest import enqueue_study
from voxelpipe.pipeline.ingest_dicom import complete_dicom_study
from voxelpipe.records import StudyRecord
from voxelpipe.status import StudyStatus


class UploadIncomplete(Exception):
    """The study still waits for declared files: `missing` names them."""

    def __init__(self, missing: list[str]) -> None:
        super().__init__(f"missing: {', '.join(missing) or 'none (validation has not started yet)'}")
        self.missing = missing


def complete_upload(
    study: StudyRecord, storage: Storage, limits: Limits, *, actor: str, source: str
) -> StudyRecord:
    """The uploader says the upload is whole: a DICOM series that has files is checked and queued
    (or rejected) with what arrived; a study still missing files raises UploadIncomplete. A study
    past its upload (a NIfTI completes with its one file) is returned as it is."""
    tracking.audit(study.study_id, "complete_requested", actor=actor, source=source)
    if study.status != StudyStatus.AWAITING_UPLOAD:
        return study
    if study.input_format == "dicom" and study.arrived:
        complete_dicom_study(study.study_id, storage, limits, source=source)
        return tracking.get_study(study.study_id) or study
    present = set(storage.list_keys(upload_prefix(study.tenant, study.study_id)))
    raise UploadIncomplete(
        [
            entry["name"]
            for entry in study.manifest or []
            if UploadKey(study.tenant, study.study_id, entry["name"]).key not in present
        ]
    )


def reprocess(study: StudyRecord, *, actor: str, source: str) -> StudyRecord:
    """Open the next attempt of an ended study and queue it (TransitionRefused otherwise)."""
    reopened = tracking.open_attempt(study.study_id, int(study.attempt))
    assert reopened.input_key is not None
    tracking.audit(
        study.study_id, "reprocess", actor=actor, source=source, detail={"attempt": reopened.attempt}
    )
    enqueue_study(reopened)
    return reopened


def delete(study: StudyRecord, storage: Storage, *, actor: str, source: str) -> int:
    """Mark the study DELETED, stop its execution, and remove every object of it; the count removed.

    DELETED first: a step still running can no longer move the study, and its execution is
    stopped before the objects go, so nothing is written after them. The audit trail stays.
    """
    tracking.transition(study.study_id, int(study.attempt), StudyStatus.DELETED)
    executions.stop_execution(study.study_id, int(study.attempt))
    uploads = upload_prefix(study.tenant, study.study_id)
    removed = sum(
        storage.delete_all_versions(prefix)
        for prefix in (
            uploads,
            quarantine_key(uploads),
            derived_key(study.study_id) + "/",
            work_prefix(study.study_id),
        )
    )
    tracking.audit(study.study_id, "deleted", actor=actor, source=source, detail={"objects_removed": removed})
    return removed
