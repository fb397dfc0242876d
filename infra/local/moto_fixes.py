"""Where moto 5.2.5 departs from AWS in a way the pipeline would notice, put right for the local cloud.

- `SendTaskFailure` drops its `cause` in moto's request handler (its backend takes one): the
  state machine's Catch would see no cause, and a failed study no message. Patched to pass it on.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from unittest import mock

from moto.core.responses import ActionResult, EmptyResult
from moto.stepfunctions.responses import StepFunctionResponse


def _send_task_failure(self: StepFunctionResponse) -> ActionResult:
    # The backend that executes state machines (moto's parser backend) takes the cause.
    self.stepfunction_backend.send_task_failure(  # type: ignore[call-arg]
        self._get_param("taskToken"), error=self._get_param("error"), cause=self._get_param("cause")
    )
    return EmptyResult()


@contextmanager
def moto_fixes() -> Iterator[None]:
    with mock.patch.object(StepFunctionResponse, "send_task_failure", _send_task_failure):
        yield
