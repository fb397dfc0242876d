"""Study status, step progress and the audit trail: the rules every step follows, on a StudyStore.

Every status change names the attempt it belongs to and the statuses it may come from; the store
refuses it otherwise (one conditional write), so a stale execution can never overwrite a newer
outcome. Each real change is announced: metrics and an event on the study bus.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit

from voxelpipe import telemetry
from voxelpipe.adapters import event_bus
from voxelpipe.observability import logger
from voxelpipe.ports import Changes, StudyChanged, StudyStore
from voxelpipe.records import AuditRecord, StudyRecord, TaskRecord, subject_key
from voxelpipe.status import StudyStatus, TaskStatus, allowed_sources
from voxelpipe.status_events import status_changed, step_changed
from voxelpipe.telemetry import Dimension, Metric


def now() -> datetime:
    return datetime.now(UTC)


def _announce(study: StudyRecord, previous: str | None) -> None:
    """Tell the world a study changed status: metrics, and an event on the bus.

    DynamoDB holds the truth and has already changed: an event the bus refuses is logged and
    counted (EventsNotPublished, on the dashboard), not retried, so that the step itself goes on.
    """
    telemetry.count(Metric.STUDY_TRANSITIONS, Dimension.STATUS, study.status)
    if study.status == StudyStatus.REJECTED:
        telemetry.count(Metric.REJECTIONS, Dimension.REASON, study.reason or "unknown")
    elif study.status == StudyStatus.FAILED:
        telemetry.count(
            Metric.FAILURES, Dimension.ERROR_TYPE, str((study.error or {}).get("type", "unknown"))
        )
    try:
        published = event_bus.publish(status_changed(study, previous))
    except Exception:  # the bus is not the record: never fail a step over it
        logger.exception("status-change event not published", extra={"study_id": study.study_id})
        published = False
    if not published and event_bus.bus_name() is not None:
        telemetry.count(Metric.EVENTS_NOT_PUBLISHED, Dimension.STATUS, study.status)


class TransitionRefused(Exception):
    """The study is not in a status (or attempt) from which this transition may happen."""

    def __init__(self, study_id: str, target: StudyStatus, attempt: int, current: StudyRecord | None) -> None:
        where = "missing" if current is None else f"{current.status} at attempt {current.attempt}"
        super().__init__(f"study {study_id}: cannot move to {target} for attempt {attempt}; it is {where}")
        self.current = current

    @property
    def deleted(self) -> bool:
        """The study was deleted meanwhile: whoever was writing for it should clean up, not retry."""
        return self.current is not None and self.current.status == StudyStatus.DELETED


def create_study(
    store: StudyStore,
    study_id: str,
    tenant: str,
    *,
    analyses: Sequence[str],
    priority: str,
    status: StudyStatus = StudyStatus.AWAITING_UPLOAD,
    subject: dict[str, Any] | None = None,
    manifest: list[dict[str, Any]] | None = None,
    webhook_url: str | None = None,
    input_format: str = "nifti",
    uid_key: str | None = None,
    parameters: dict[str, dict[str, Any]] | None = None,
    source: str | None = None,
    exam_id: str | None = None,
    series_uid: str | None = None,
    destinations: Sequence[str] | None = None,
    scan_date: str | None = None,
) -> StudyRecord | None:
    """Create the study's row at attempt 1; None when it already exists. A subject with a
    subject_ref puts the study in the subject index; `scan_date` is the (already shifted) date."""
    created = now()
    record = StudyRecord(
        study_id,
        tenant=tenant,
        status=status.value,
        attempt=1,
        created_at=created,
        updated_at=created,
        analyses=list(analyses),
        priority=priority,
        subject=subject,
        manifest=manifest,
        webhook_url=webhook_url,
        input_format=input_format,
        uid_key=uid_key,
        parameters=parameters,
        source=source,
        exam_id=exam_id,
        series_uid=series_uid,
        destinations=list(destinations) if destinations else None,
        subject_key=subject_key(tenant, ref) if (ref := (subject or {}).get("subject_ref")) else None,
        scan_date=scan_date,
    )
    if not store.create_study(record):
        return None
    _announce(record, None)
    return record


def transition(
    store: StudyStore,
    study_id: str,
    attempt: int,
    target: StudyStatus,
    *,
    changes: Changes | None = None,
) -> StudyRecord:
    """Move a study to `target` within `attempt`, forward only; the updated record is returned.

    Repeating a transition the study already made is allowed (a retried step), and applies
    `changes` again; only a real change of status is announced (metrics and the bus).
    """
    try:
        record = store.move_study(
            study_id, attempt=attempt, sources=allowed_sources(target), target=target, changes=changes
        )
    except StudyChanged as changed:
        raise TransitionRefused(study_id, target, attempt, changed.current) from changed
    if record.previous_status != target.value:
        _announce(record, record.previous_status)
    return record


# A new attempt may follow an attempt that ended; a rejected upload needs a new upload instead.
REPROCESSABLE = frozenset({StudyStatus.COMPLETED, StudyStatus.FAILED})
# A DICOM exam that receives instances after it ended opens an attempt that waits for them (a
# rejected exam too: the new instances may be the series its rules were waiting for).
REOPENABLE_FOR_INSTANCES = REPROCESSABLE | {StudyStatus.REJECTED}
# What a new attempt starts without: the outcome of the one before.
_ATTEMPT_OUTCOME = ("error", "results_key", "summary", "cost", "report")


def open_attempt(
    store: StudyStore,
    study_id: str,
    previous: int,
    *,
    awaiting_instances: bool = False,
    changes: Changes | None = None,
) -> StudyRecord:
    """Start attempt `previous + 1` of a study whose attempt `previous` ended; it is QUEUED, or
    AWAITING_UPLOAD when `awaiting_instances` (a DICOM exam that received instances after it ended:
    they are checked and routed before it is queued again).

    The write is conditional on the attempt, so of concurrent reprocess calls exactly one opens it.
    `changes` (a reprocess naming other analyses, parameters or priority) are written with it.
    """
    target = StudyStatus.AWAITING_UPLOAD if awaiting_instances else StudyStatus.QUEUED
    try:
        record = store.move_study(
            study_id,
            attempt=previous,
            sources=REOPENABLE_FOR_INSTANCES if awaiting_instances else REPROCESSABLE,
            target=target,
            changes={
                **dict.fromkeys(
                    _ATTEMPT_OUTCOME + (("reason", "reason_detail") if awaiting_instances else ())
                ),
                **(changes or {}),
            },
            next_attempt=True,
        )
    except StudyChanged as changed:
        raise TransitionRefused(study_id, target, previous + 1, changed.current) from changed
    _announce(record, record.previous_status)
    return record


def task_key(attempt: int, step: str) -> str:
    return f"{attempt:04d}#{step}"


def _announce_step(task: TaskRecord, at: datetime) -> None:
    """Put a step change on the bus for live progress; like a status event, never fail a step over it."""
    if task.tenant is None or event_bus.bus_name() is None:
        return
    try:
        event_bus.publish(step_changed(task, task.tenant, at))
    except Exception:
        logger.exception("step-change event not published", extra={"study_id": task.study_id})


def _tenant_of(store: StudyStore, study_id: str) -> str | None:
    """The study's tenant, which step events carry (read only where there is a bus to put them on)."""
    if event_bus.bus_name() is None:
        return None
    study = store.get_study(study_id)
    return study.tenant if study is not None else None


def start_task(store: StudyStore, study_id: str, attempt: int, step: str) -> TaskRecord:
    task = TaskRecord(
        study_id,
        task_key(attempt, step),
        attempt=attempt,
        step=step,
        status=TaskStatus.RUNNING.value,
        progress=0,
        started_at=now(),
        tenant=_tenant_of(store, study_id),
    )
    store.save_task(task)
    _announce_step(task, task.started_at)
    return task


def set_progress(store: StudyStore, task: TaskRecord, progress: int) -> None:
    if store.update_task(task, {"progress": max(0, min(100, progress))}):
        _announce_step(task, now())


def finish_task(store: StudyStore, task: TaskRecord, detail: dict[str, Any] | None = None) -> None:
    _end_task(store, task, TaskStatus.SUCCEEDED, detail=detail)


def fail_task(store: StudyStore, task: TaskRecord, error: dict[str, Any]) -> None:
    _end_task(store, task, TaskStatus.FAILED, error=error)


def fail_running_tasks(store: StudyStore, study_id: str, attempt: int, error: dict[str, Any]) -> None:
    """Every task of the attempt still RUNNING ends FAILED with `error`."""
    for task in store.tasks_of(study_id, attempt):
        if task.status == TaskStatus.RUNNING:
            fail_task(store, task, error)


def _end_task(
    store: StudyStore,
    task: TaskRecord,
    status: TaskStatus,
    detail: dict[str, Any] | None = None,
    error: dict[str, Any] | None = None,
) -> None:
    finished = now()
    duration_ms = round((finished - task.started_at).total_seconds() * 1000, 1)
    changes: dict[str, Any] = {"status": status.value, "finished_at": finished, "duration_ms": duration_ms}
    if status is TaskStatus.SUCCEEDED:
        changes["progress"] = 100
    if detail is not None:
        changes["detail"] = detail
    if error is not None:
        changes["error"] = error
    if store.update_task(task, changes):
        telemetry.emit(Metric.STEP_DURATION, duration_ms, MetricUnit.Milliseconds, Dimension.STEP, task.step)
        _announce_step(task, finished)


def audit(
    store: StudyStore,
    study_id: str,
    action: str,
    *,
    actor: str,
    source: str,
    detail: dict[str, Any] | None = None,
    once_at: datetime | None = None,
) -> bool:
    """Append one audit row (rows are never updated); False when it was written before.

    `once_at` makes the row's key a function of that time and the action, so an event that is
    reported twice (a duplicate message) writes one row: pass when the event itself happened.
    """
    at = once_at or now()
    event_key = f"{at.isoformat()}#{action if once_at else uuid.uuid4().hex[:8]}"
    record = AuditRecord(study_id, event_key, at=at, actor=actor, action=action, source=source, detail=detail)
    return store.append_audit(record)
