"""Powertools Logger, Tracer and Metrics shared by every function.

Logs go to stderr: Lambda sends both streams to CloudWatch, and locally stdout stays free for
the CLI's own output.
"""

from __future__ import annotations

import contextlib
import sys
import warnings
from collections.abc import AsyncGenerator, Generator, Sequence
from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.tracing.base import BaseProvider, BaseSegment


class _Untraced(BaseSegment):
    """The segment of a tracer that is off: it records nothing."""

    def close(self, end_time: int | None = None) -> None:
        pass

    def add_subsegment(self, subsegment: Any) -> None:
        pass

    def remove_subsegment(self, subsegment: Any) -> None:
        pass

    def put_annotation(self, key: str, value: Any) -> None:
        pass

    def put_metadata(self, key: str, value: Any, namespace: str = "default") -> None:
        pass

    def add_exception(self, exception: BaseException, stack: Any, remote: bool = False) -> None:
        pass


class _NoTracing(BaseProvider):
    """Stands in for the X-Ray recorder where tracing is off (outside Lambda, or
    POWERTOOLS_TRACE_DISABLED): Powertools' Tracer would import the X-Ray SDK (~120 ms of every
    cold start) even to do nothing."""

    @contextlib.contextmanager
    def in_subsegment(self, name: str | None = None, **kwargs: Any) -> Generator[BaseSegment, None, None]:
        yield _Untraced()

    @contextlib.asynccontextmanager
    async def in_subsegment_async(
        self, name: str | None = None, **kwargs: Any
    ) -> AsyncGenerator[BaseSegment, None]:
        yield _Untraced()

    def put_annotation(self, key: str, value: Any) -> None:
        pass

    def put_metadata(self, key: str, value: Any, namespace: str = "default") -> None:
        pass

    def patch(self, modules: Sequence[str]) -> None:
        pass

    def patch_all(self) -> None:
        pass


def _tracer() -> Tracer:
    # Powertools' own rule for "off" (its env var, or not running in Lambda); in the cloud the
    # functions trace (Tracing: Active) and the X-Ray SDK loads as usual.
    if Tracer._is_tracer_disabled():
        return Tracer(disabled=True, provider=_NoTracing())
    return Tracer()


logger = Logger(stream=sys.stderr)
tracer = _tracer()
metrics = Metrics()

# Metrics with their own dimension are flushed one by one (voxelpipe.telemetry), so a handler's
# shared metric set is often empty at the end, which Powertools would warn of on every call.
warnings.filterwarnings("ignore", message="No application metrics to publish")
