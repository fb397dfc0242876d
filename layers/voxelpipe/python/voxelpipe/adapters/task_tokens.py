"""Answering Step Functions task tokens: success, failure, heartbeat."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from typing import TYPE_CHECKING

import boto3
from botocore.exceptions import ClientError

if TYPE_CHECKING:
    from mypy_boto3_stepfunctions import SFNClient

# Step Functions' answers for a token that can no longer be answered: its task timed out (or
# ended), or the token was never valid here.
_EXPIRED_CODES = frozenset({"TaskTimedOut", "InvalidToken", "TaskDoesNotExist"})
# Step Functions caps an error name at 256 characters and a cause at 32768.
MAX_ERROR_CHARS = 256
MAX_CAUSE_CHARS = 32768


class TokenExpired(Exception):
    """The task token is no longer valid: its task timed out, ended, or never existed."""


@cache
def _client() -> SFNClient:
    return boto3.client("stepfunctions")


class TaskTokens:
    """The answers a GPU worker gives the state machine; an expired token raises TokenExpired."""

    def success(self, token: str, output: str) -> None:
        with _expired_as_exception():
            _client().send_task_success(taskToken=token, output=output)

    def failure(self, token: str, error: str, cause: str) -> None:
        with _expired_as_exception():
            _client().send_task_failure(
                taskToken=token, error=error[:MAX_ERROR_CHARS], cause=cause[:MAX_CAUSE_CHARS]
            )

    def heartbeat(self, token: str) -> None:
        with _expired_as_exception():
            _client().send_task_heartbeat(taskToken=token)


@contextmanager
def _expired_as_exception() -> Iterator[None]:
    try:
        yield
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") in _EXPIRED_CODES:
            raise TokenExpired(str(error)) from error
        raise
