"""Starting state machine executions, one per study attempt."""

from __future__ import annotations

import os
from datetime import datetime
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


def _execution_arn(study_id: str, attempt: int) -> str:
    return (
        os.environ[EnvVar.STATE_MACHINE_ARN].replace(":stateMachine:", ":execution:")
        + ":"
        + execution_name(study_id, attempt)
    )


class StepFunctionsExecutions:
    """`ports.Executions` on the study state machine (its ARN from the environment)."""

    def start(self, execution: ExecutionInput) -> datetime | None:
        client = _client()
        try:
            started = client.start_execution(
                stateMachineArn=os.environ[EnvVar.STATE_MACHINE_ARN],
                name=execution_name(execution.study_id, execution.attempt),
                input=execution.model_dump_json(),
            )
        except client.exceptions.ExecutionAlreadyExists:
            return None
        return started["startDate"]

    def status(self, study_id: str, attempt: int) -> str | None:
        client = _client()
        try:
            return client.describe_execution(executionArn=_execution_arn(study_id, attempt))["status"]
        except client.exceptions.ExecutionDoesNotExist:
            return None

    def stop(self, study_id: str, attempt: int, *, error: str, cause: str) -> bool:
        if self.status(study_id, attempt) != "RUNNING":
            return False
        client = _client()
        try:
            client.stop_execution(executionArn=_execution_arn(study_id, attempt), error=error, cause=cause)
        except client.exceptions.ExecutionDoesNotExist:
            return False
        return True
