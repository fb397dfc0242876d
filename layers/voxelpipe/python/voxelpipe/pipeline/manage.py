"""What users do to a study after registering it: say its upload is complete, reprocess it, or
delete it and its data."""

from __future__ import annotations

from voxelpipe import tracking
from voxelpipe.keys import UploadKey, upload_prefix
from voxelpipe.pipeline.lifecycle import ExamAdapters, enqueue_study
from voxelpipe.pipeline.subjects import refresh_subject
from voxelpipe.ports import Executions, IdentityMaps, ObjectStorage, StudyStore, WorkQueues
from voxelpipe.records import StudyRecord
from voxelpipe.status import StudyStatus
from voxelpipe.study_data import purge_study

# What a deleted study's record keeps: who it belonged to and what became of it. The rest (the
# uploader's file names, the subject, what validation learnt, results) goes with its data; so does
# its place in the subject index and its (shifted) scan date.
_FORGOTTEN_ON_DELETE = (
    "manifest",
    "subject",
    "subject_key",
    "scan_date",
    "input",
    "input_key",
    "summary",
    "results_key",
    "cost",
    "report",
    "webhook_url",
    "parameters",
    "uid_key",
    "reason_detail",
    "error",
)


class UploadIncomplete(Exception):
    """The study still waits for declared files: `missing` names them."""

    def __init__(self, missing: list[str]) -> None:
        super().__init__(f"missing: {', '.join(missing) or 'none (validation has not started yet)'}")
        self.missing = missing


def complete_upload(study: StudyRecord, exam: ExamAdapters, *, actor: str, source: str) -> StudyRecord:
    """The uploader says the upload is whole: a DICOM series that has files is checked and queued
    (or rejected) with what arrived; a study still missing files raises UploadIncomplete. A study
    past its upload (a NIfTI completes with its one file) is returned as it is."""
    store, storage = exam.store, exam.storage
    tracking.audit(store, study.study_id, "complete_requested", actor=actor, source=source)
    if study.status != StudyStatus.AWAITING_UPLOAD:
        return study
    if study.input_format == "dicom" and study.arrived:
        # The series checks load pydicom, nibabel and numpy (~0.5 s): only a DICOM upload's
        # completion pays for them, not every cold start of the API.
        from voxelpipe.pipeline.exams import complete_dicom_study

        complete_dicom_study(study.study_id, exam, source=source)
        return store.get_study(study.study_id) or study
    present = set(storage.list_keys(upload_prefix(study.tenant, study.study_id)))
    raise UploadIncomplete(
        [
            entry["name"]
            for entry in study.manifest or []
            if UploadKey(study.tenant, study.study_id, entry["object"]).key not in present
        ]
    )


def reprocess(
    study: StudyRecord, store: StudyStore, queues: WorkQueues, *, actor: str, source: str
) -> StudyRecord:
    """Open the next attempt of an ended study and queue it (TransitionRefused otherwise).

    Of concurrent calls for the same study, exactly one opens the attempt: the others are refused.
    """
    reopened = tracking.open_attempt(store, study.study_id, int(study.attempt))
    assert reopened.input_key is not None
    tracking.audit(
        store, study.study_id, "reprocess", actor=actor, source=source, detail={"attempt": reopened.attempt}
    )
    enqueue_study(queues, reopened)
    return reopened


def delete(
    study: StudyRecord,
    store: StudyStore,
    storage: ObjectStorage,
    executions: Executions,
    identity_maps: IdentityMaps,
    *,
    actor: str,
    source: str,
) -> int:
    """Mark the study DELETED, stop its execution, and remove every object and row of it (its
    identity map too); the count.

    DELETED first: from then on no step can move the study, and a step still running when its
    execution is stopped removes what it wrote when it ends (`lifecycle.writing_for`); the reaper
    purges again once every step can have ended. The audit trail stays; the record keeps only its
    tenant and status.
    """
    attempt = int(study.attempt)
    tracking.transition(
        store, study.study_id, attempt, StudyStatus.DELETED, changes=dict.fromkeys(_FORGOTTEN_ON_DELETE)
    )
    executions.stop(study.study_id, attempt, error="StudyDeleted", cause="the study was deleted")
    removed = purge_study(store, storage, identity_maps, study)
    subject_ref = (study.subject or {}).get("subject_ref")
    if subject_ref:  # the subject's record no longer counts the study (gone with its last study)
        refresh_subject(store, study.tenant, subject_ref, excluding=study.study_id)
    tracking.audit(
        store, study.study_id, "deleted", actor=actor, source=source, detail={"objects_removed": removed}
    )
    return removed
