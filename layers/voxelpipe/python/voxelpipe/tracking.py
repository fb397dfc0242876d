"""Study status, step progress and the audit trail, written with conditional updates.

Every status change names the attempt it belongs to and the statuses it may come from; DynamoDB
refuses it otherwise, so a stale execution can never overwrite a newer outcome.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from pynamodb.exceptions import DoesNotExist, PutError, UpdateError
from pynamodb.expressions.update import Action

from voxelpipe import telemetry
from voxelpipe.adapters import event_bus
from voxelpipe.observability import logger
from voxelpipe.records import AuditRecord, StudyRecord, TaskRecord
from voxelpipe.status import StudyStatus, TaskStatus, allowed_sources
from voxelpipe.status_events import status_changed
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


def _is_conditional_failure(error: Exception) -> bool:
    return getattr(error, "cause_response_code", None) == "ConditionalCheckFailedException"


def get_study(study_id: str) -> StudyRecord | None:
    try:
        return StudyRecord.get(study_id, consistent_read=True)
    except DoesNotExist:
        return None


def create_study(
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
) -> StudyRecord | None:
    """Create the study's row at attempt 1; None when it already exists."""
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
    )
    try:
        record.save(condition=StudyRecord.study_id.does_not_exist())
    except PutError as error:
        if _is_conditional_failure(error):
            return None
        raise
    _announce(record, None)
    return record


def transition(
    study_id: str,
    attempt: int,
    target: StudyStatus,
    *,
    changes: Sequence[Action] = (),
) -> StudyRecord:
    """Move a study to `target` within `attempt`, forward only; the updated record is returned.

    Repeating a transition the study already made is allowed (a retried step), and applies
    `changes` again; only a real change of status is announced (metrics and the bus).
    """
    record = StudyRecord(study_id)
    condition = (StudyRecord.attempt == attempt) & StudyRecord.status.is_in(
        *(status.value for status in allowed_sources(target))
    )
    try:
        record.update(
            actions=[
                # Right-hand paths read the item as it was before this update.
                StudyRecord.previous_status.set(StudyRecord.status),
                StudyRecord.status.set(target.value),
                StudyRecord.updated_at.set(now()),
                *changes,
            ],
            condition=condition,
        )
    except UpdateError as error:
        if _is_conditional_failure(error):
            raise TransitionRefused(study_id, target, attempt, get_study(study_id)) from error
        raise
    if record.previous_status != target.value:
        _announce(record, record.previous_status)
    return record


# A new attempt may follow an attempt that ended; a rejected upload needs a new upload instead.
REPROCESSABLE = frozenset({StudyStatus.COMPLETED, StudyStatus.FAILED})


def open_attempt(study_id: str, previous: int) -> StudyRecord:
    """Start attempt `previous + 1` of a study whose attempt `previous` ended; it is QUEUED.

    The condition names the attempt, so two concurrent reprocess calls open one attempt.
    """
    record = StudyRecord(study_id)
    try:
        record.update(
            actions=[
                StudyRecord.attempt.set(previous + 1),
                StudyRecord.previous_status.set(StudyRecord.status),
                StudyRecord.status.set(StudyStatus.QUEUED.value),
                StudyRecord.updated_at.set(now()),
                StudyRecord.error.remove(),
                StudyRecord.results_key.remove(),
                StudyRecord.summary.remove(),
                StudyRecord.cost.remove(),
            ],
            condition=(StudyRecord.attempt == previous)
            & StudyRecord.status.is_in(*(status.value for status in REPROCESSABLE))
            & StudyRecord.input_key.exists(),
        )
    except UpdateError as error:
        if _is_conditional_failure(error):
            raise TransitionRefused(
                study_id, StudyStatus.QUEUED, previous + 1, get_study(study_id)
            ) from error
        raise
    _announce(record, record.previous_status)
    return record


def task_key(attempt: int, step: str) -> str:
    return f"{attempt:04d}#{step}"


def start_task(study_id: str, attempt: int, step: str) -> TaskRecord:
    task = TaskRecord(
        study_id,
        task_key(attempt, step),
        attempt=attempt,
        step=step,
        status=TaskStatus.RUNNING.value,
        progress=0,
        started_at=now(),
    )
    task.save()
    return task


def set_progress(task: TaskRecord, progress: int) -> None:
    task.update(actions=[TaskRecord.progress.set(max(0, min(100, progress)))])


def finish_task(task: TaskRecord, detail: dict[str, Any] | None = None) -> None:
    _end_task(task, TaskStatus.SUCCEEDED, detail=detail)


def fail_task(task: TaskRecord, error: dict[str, Any]) -> None:
    _end_task(task, TaskStatus.FAILED, error=error)


def fail_running_tasks(study_id: str, attempt: int, error: dict[str, Any]) -> None:
    """Every task of the attempt still RUNNING ends FAILED with `error`."""
    for task in tasks_of(study_id, attempt):
        if task.status == TaskStatus.RUNNING:
            fail_task(task, error)


def _end_task(
    task: TaskRecord,
    status: TaskStatus,
    detail: dict[str, Any] | None = None,
    error: dict[str, Any] | None = None,
) -> None:
    finished = now()
    actions: list[Action] = [
        TaskRecord.status.set(status.value),
        TaskRecord.finished_at.set(finished),
        TaskRecord.duration_ms.set(round((finished - task.started_at).total_seconds() * 1000, 1)),
    ]
    if status is TaskStatus.SUCCEEDED:
        actions.append(TaskRecord.progress.set(100))
    if detail is not None:
        actions.append(TaskRecord.detail.set(detail))
    if error is not None:
        actions.append(TaskRecord.error.set(error))
    task.update(actions=actions)
    telemetry.emit(
        Metric.STEP_DURATION, float(task.duration_ms), MetricUnit.Milliseconds, Dimension.STEP, task.step
    )


def tasks_of(study_id: str, attempt: int | None = None) -> list[TaskRecord]:
    """The study's step rows (of one attempt, or all), in the order they started."""
    prefix = None if attempt is None else TaskRecord.task_key.startswith(f"{attempt:04d}#")
    tasks = TaskRecord.query(study_id, range_key_condition=prefix, consistent_read=True)
    return sorted(tasks, key=lambda task: (task.attempt, task.started_at))


def audit(
    study_id: str,
    action: str,
    *,
    actor: str,
    source: str,
    detail: dict[str, Any] | None = None,
) -> None:
    """Append one audit row; rows are never updated."""
    at = now()
    record = AuditRecord(
        study_id,
        f"{at.isoformat()}#{uuid.uuid4().hex[:8]}",
        at=at,
        actor=actor,
        action=action,
        source=source,
        detail=detail,
    )
    record.save(condition=AuditRecord.event_key.does_not_exist())


def audit_trail(study_id: str) -> list[AuditRecord]:
    return list(AuditRecord.query(study_id, consistent_read=True))
