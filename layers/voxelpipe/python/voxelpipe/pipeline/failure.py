"""MarkFailed: record why an execution stopped and mark its study FAILED."""

from __future__ import annotations

import json
from typing import Any

from voxelpipe import tracking
from voxelpipe.gpu_settings import GPU_RETRIED_ERRORS
from voxelpipe.messages import FailureInput
from voxelpipe.ports import StudyStore
from voxelpipe.status import StudyStatus, TaskStatus
from voxelpipe.wiring import execution_name
from voxelpipe.workflow_settings import TRANSIENT_LAMBDA_ERRORS

ACTOR = "mark_failed"
# Errors worth a reprocess without changing anything: the platform's, not the data's.
_RETRYABLE = frozenset(
    {
        *TRANSIENT_LAMBDA_ERRORS,
        *GPU_RETRIED_ERRORS,
        "States.Timeout",
        "States.HeartbeatTimeout",
        "Lambda.Unknown",
    }
)


def describe_error(failure: FailureInput, store: StudyStore) -> dict[str, Any]:
    """The error as the user sees it: type, message, failed step, and whether a retry may help."""
    message = failure.error.cause or failure.error.error
    error_type = failure.error.error
    try:
        cause = json.loads(failure.error.cause or "")
    except json.JSONDecodeError:
        cause = None
    if isinstance(cause, dict):
        message = str(cause.get("errorMessage", message))
        error_type = str(cause.get("errorType", error_type))
    failed_steps = [
        record.step
        for record in store.tasks_of(failure.study_id, failure.attempt)
        if record.status == TaskStatus.RUNNING
    ]
    return {
        "type": error_type,
        "message": message[:2000],
        "step": failed_steps[0] if failed_steps else None,
        "retryable": failure.error.error in _RETRYABLE,
    }


def mark_failed(failure: FailureInput, store: StudyStore) -> dict[str, Any]:
    error = describe_error(failure, store)
    tracking.fail_running_tasks(store, failure.study_id, failure.attempt, error)
    try:
        tracking.transition(
            store, failure.study_id, failure.attempt, StudyStatus.FAILED, changes={"error": error}
        )
    except tracking.TransitionRefused as refused:
        # A stale execution (the study has a newer attempt or already ended): leave the study be.
        return {"marked": False, "why": str(refused)}
    tracking.audit(
        store,
        failure.study_id,
        "failed",
        actor=ACTOR,
        source=execution_name(failure.study_id, failure.attempt),
        detail=error,
    )
    return {"marked": True, **error}
