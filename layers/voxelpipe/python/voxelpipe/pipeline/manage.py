"""What users do to a study after its upload: reprocess it, or delete it and its data."""

from __future__ import annotations

from voxelpipe import tracking
from voxelpipe.adapters import executions
from voxelpipe.adapters.storage import Storage
from voxelpipe.keys import derived_key, quarantine_key, upload_prefix, work_prefix
from voxelpipe.pipeline.ingest import enqueue_study
from voxelpipe.records import StudyRecord
from voxelpipe.status import StudyStatus


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
