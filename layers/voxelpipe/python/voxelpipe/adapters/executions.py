"""Starting state machine executions, one per study attempt."""

from __future__ import annotations

import os
from functools import cache
from typing import TYPE_CHECKING

import boto3

from voxelpipe.messages import ExecutionInput
from voxelpipe.wiring import EnvVar, execution_name

if TYPE_CHECKING:
    from mypy_boto3_stepfunctions import SFNClient


@cache
def _client() -> SFNClient:
    return boto3.client("stepfunctions")


def start_execution(execution: ExecutionInput) -> bool:
    """Start the attempt's execution; False when it already exists (a duplicate message)."""
    client = _client()
    try:
        client.start_execution(
            stateMachineArn=os.environ[EnvVar.STATE_MACHINE_ARN],
            name=execution_name(execution.study_id, execution.attempt),
            input=execution.model_dump_json(),
        )
    except client.exceptions.ExecutionAlreadyExists:
        return False
    return True


def _execution_arn(study_id: str, attempt: int) -> str:
    return (
        os.environ[EnvVar.STATE_MACHINE_ARN].replace(":stateMachine:", ":execution:")
        + ":"
        + execution_name(study_id, attempt)
    )


def execution_status(study_id: str, attempt: int) -> str | None:
    """RUNNING, SUCCEEDED, FAILED, TIMED_OUT or ABORTED; None when the attempt has no execution."""
    client = _client()
    try:
        return client.describe_execution(executionArn=_execution_arn(study_id, attempt))["status"]
    except client.exceptions.ExecutionDoesNotExist:
        return None


def stop_execution(
    study_id: str, attempt: int, *, error: str = "StudyDeleted", cause: str = "the study was deleted"
) -> bool:
    """Stop the attempt's execution if it is running; False when there was none to stop."""
    if execution_status(study_id, attempt) != "RUNNING":
        return False
    client = _client()
    try:
        client.stop_execution(executionArn=_execution_arn(study_id, attempt), error=error, cause=cause)
    except client.exceptions.ExecutionDoesNotExist:
        return False
    return True
