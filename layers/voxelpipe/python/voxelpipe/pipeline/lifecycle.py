"""The study lifecycle every step shares: what an upload is, how a study is rejected, queued,
quarantined or purged. Ingest, Prepare, the reaper and the users' commands all go through these, so
a study moves the same way whoever moves it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from voxelpipe import tracking
from voxelpipe.analyses import CATALOGUE
from voxelpipe.inference.registry import model_analyses
from voxelpipe.keys import quarantine_key, upload_prefix
from voxelpipe.limits import Limits
from voxelpipe.messages import Priority, WorkItem
from voxelpipe.ports import ObjectStorage, RuleSets, StudyStore, TransferStore, WorkQueues
from voxelpipe.records import StudyRecord, TaskRecord
from voxelpipe.rejections import ReasonCode, Rejected
from voxelpipe.status import StudyStatus

if TYPE_CHECKING:
    from voxelpipe.dicom import UidMap

INGEST_ACTOR = "ingest"


@dataclass(frozen=True)
class IngestOutcome:
    key: str
    study_id: str | None
    status: str
    reason: str | None = None
    detail: str | None = None


@dataclass(frozen=True)
class ExamAdapters:
    """What ingest needs to check an upload and complete an exam (route it, queue it)."""

    store: StudyStore
    storage: ObjectStorage
    queues: WorkQueues
    transfers: TransferStore
    rule_sets: RuleSets
    limits: Limits


def check_manifest(object_name: str, size: int, manifest: list[dict[str, Any]] | None) -> None:
    """The object must be a file the study declared, of the size declared.

    Presigned POST policies limit the size in AWS, but nothing stops other writers with access to
    the bucket, so the declaration is checked again here. Messages name the server's object names,
    never the uploader's file names (which may carry identifying text).
    """
    if manifest is None:
        return
    declared = {entry["object"]: int(entry["size"]) for entry in manifest}
    if object_name not in declared:
        raise Rejected(
            ReasonCode.INVALID_NAME,
            f"{object_name!r} is not a file the study declared ({', '.join(sorted(declared))})",
        )
    size_declared = declared[object_name]
    if size > size_declared:
        raise Rejected(
            ReasonCode.TOO_LARGE, f"{object_name} is {size} bytes; the study declared {size_declared}"
        )
    if size < size_declared:
        raise Rejected(
            ReasonCode.TRUNCATED, f"{object_name} is {size} bytes; the study declared {size_declared}"
        )


def check_analyses(study: StudyRecord) -> None:
    """Every analysis the study asks for exists: a catalogue one, or `model:NAME` while the study's
    tenant (or the deployment) has a READY version of NAME."""
    models = model_analyses(study.analyses, study.tenant)
    unknown = [name for name in study.analyses if name not in CATALOGUE and name not in models]
    if unknown:
        raise Rejected(
            ReasonCode.UNKNOWN_ANALYSIS,
            f"unknown analyses {', '.join(unknown)}; known: {', '.join(sorted([*CATALOGUE, *models]))}",
        )


def uid_map(study: StudyRecord) -> UidMap:
    """The DICOM study's replacement UIDs: keyed hashes under the study's own key. The studies
    routed from an exam share the exam's, so one original UID has one replacement across them."""
    assert study.uid_key is not None, "a DICOM study is registered with its UID key"
    # Here, not at the top: the reaper and the API use this module and ship no pydicom.
    from voxelpipe.dicom import UidMap

    return UidMap.for_study(bytes.fromhex(study.uid_key), study.exam_id or study.study_id)


def reject_study(
    store: StudyStore,
    study_id: str,
    attempt: int,
    rejected: Rejected,
    task: TaskRecord | None,
    *,
    source: str,
    actor: str = INGEST_ACTOR,
) -> IngestOutcome:
    """REJECTED with the reason code and its sentence, on the study, its task and the audit trail
    (by ingest, or by Prepare for a series that proves bad only when decoded)."""
    if task is not None:  # ended first, so that a REJECTED study never shows a RUNNING task
        tracking.fail_task(
            store, task, {"type": "Rejected", "reason": rejected.reason.value, "message": rejected.detail}
        )
    tracking.transition(
        store,
        study_id,
        attempt,
        StudyStatus.REJECTED,
        changes={"reason": rejected.reason.value, "reason_detail": rejected.detail},
    )
    tracking.audit(
        store,
        study_id,
        "rejected",
        actor=actor,
        source=source,
        detail={"reason": rejected.reason.value, "detail": rejected.detail},
    )
    return IngestOutcome(source, study_id, StudyStatus.REJECTED.value, rejected.reason.value, rejected.detail)


def queue_study(
    store: StudyStore,
    queues: WorkQueues,
    study_id: str,
    attempt: int,
    input_key: str,
    described: dict[str, Any],
    task: TaskRecord,
    *,
    source: str,
) -> IngestOutcome:
    """VALIDATED with what validation learnt, then QUEUED and sent to its work queue."""
    tracking.transition(
        store, study_id, attempt, StudyStatus.VALIDATED, changes={"input_key": input_key, "input": described}
    )
    tracking.finish_task(store, task, detail=described)
    # QUEUED before the send: the execution may start (and move the study on) before send returns.
    queued = tracking.transition(store, study_id, attempt, StudyStatus.QUEUED)
    tracking.audit(
        store,
        study_id,
        "queued",
        actor=INGEST_ACTOR,
        source=source,
        detail={"sha256": described.get("sha256")},
    )
    enqueue_study(queues, queued)
    return IngestOutcome(source, study_id, StudyStatus.QUEUED.value)


def enqueue_study(queues: WorkQueues, study: StudyRecord) -> None:
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


def quarantine_uploads(storage: ObjectStorage, study: StudyRecord) -> None:
    """Move every object the study's upload prefix holds to quarantine/, out of the pipeline's way."""
    for key in storage.list_keys(upload_prefix(study.tenant, study.study_id)):
        storage.move(key, quarantine_key(key))
