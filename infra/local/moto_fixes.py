"""Where moto 5.2.5 departs from AWS in a way the pipeline would notice, put right for the local cloud.

- `SendTaskFailure` drops its `cause` in moto's request handler (its backend takes one): the
  state machine's Catch would see no cause, and a failed study no message. Patched to pass it on.
- The task-token calls (and the map-run ones) look through executions whose interpreter has
  already let go of its environment (one ending meanwhile, or a finished one for SendTaskFailure)
  and fail with an AttributeError, which AWS never answers: such executions hold no token, so
  they are left out of the search.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from unittest import mock

from moto.core.responses import ActionResult, EmptyResult
from moto.stepfunctions.parser.models import StepFunctionsParserBackend
from moto.stepfunctions.responses import StepFunctionResponse

_get_executions = StepFunctionsParserBackend._get_executions


def _executions_with_environment(self: StepFunctionsParserBackend, execution_status: Any = None) -> list[Any]:
    return [
        execution
        for execution in _get_executions(self, execution_status)
        if getattr(getattr(execution, "exec_worker", None), "env", None) is not None
    ]


def _send_task_failure(self: StepFunctionResponse) -> ActionResult:
    # The backend that executes state machines (moto's parser backend) takes the cause.
    self.stepfunction_backend.send_task_failure(  # type: ignore[call-arg]
        self._get_param("taskToken"), error=self._get_param("error"), cause=self._get_param("cause")
    )
    return EmptyResult()


@contextmanager
def moto_fixes() -> Iterator[None]:
    with (
        mock.patch.object(StepFunctionResponse, "send_task_failure", _send_task_failure),
        mock.patch.object(StepFunctionsParserBackend, "_get_executions", _executions_with_environment),
    ):
        yield
