"""What Lambda's runtime does around a handler, the same in the cloud's process and in its workers:
the context object, and an exception turned into a function error."""

from __future__ import annotations

import time
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aws_lambda_powertools.metrics.functions import is_metrics_disabled

from infra.local.deploy import ACCOUNT_ID, REGION

Handler = Callable[[Any, Any], Any]


@dataclass
class LambdaContext:
    """The fields of Lambda's context object that handlers and Powertools read."""

    function_name: str
    memory_limit_in_mb: int
    timeout_s: int
    function_version: str = "$LATEST"
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    log_group_name: str = ""
    log_stream_name: str = "local"
    started: float = field(default_factory=time.monotonic)

    @property
    def invoked_function_arn(self) -> str:
        return f"arn:aws:lambda:{REGION}:{ACCOUNT_ID}:function:{self.function_name}"

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self.timeout_s - (time.monotonic() - self.started)) * 1000))


def function_error(error_type: str, message: str, stack_trace: list[str]) -> dict[str, Any]:
    """The payload Lambda returns for a function error (the state machine's Catch reads it)."""
    return {"errorType": error_type, "errorMessage": message, "stackTrace": stack_trace}


def call_handler(handler: Handler, event: Any, context: LambdaContext) -> tuple[Any, str | None]:
    """Call a handler as Lambda would: (payload, error type or None)."""
    error: str | None = None
    try:
        payload = handler(event, context)
    except Exception as exc:  # Lambda reports any exception as a function error
        error = type(exc).__name__
        payload = function_error(error, str(exc), traceback.format_exception(exc))
    if is_metrics_disabled():
        # Imported by the handler already (Powertools' Logger, Tracer and Metrics: ~0.4 s that a
        # local cloud's start need not pay).
        from voxelpipe.observability import metrics

        # Powertools keeps a disabled metric set instead of flushing it, and at 100 values prints
        # it anyway: drop it after each call, as a Lambda invocation's flush would.
        metrics.clear_metrics()
    return payload, error
