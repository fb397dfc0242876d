"""How many GPU workers the queue's depth calls for: one policy for the scaler Lambda and the local cloud."""

from __future__ import annotations

from dataclasses import dataclass
from math import ceil
from typing import Protocol

from aws_lambda_powertools.metrics import MetricUnit

from voxelpipe import telemetry
from voxelpipe.adapters.queues import QueueDepth
from voxelpipe.gpu_settings import GpuSettings
from voxelpipe.observability import logger
from voxelpipe.telemetry import Dimension, Metric


def workers_wanted(depth: QueueDepth, micro_batch_size: int, max_workers: int) -> int:
    """One worker per micro-batch of messages, waiting or in flight, up to `max_workers`; none for none."""
    if depth.total <= 0:
        return 0
    return min(max_workers, ceil(depth.total / micro_batch_size))


def jobs_to_submit(depth: QueueDepth, active_jobs: int, micro_batch_size: int, max_workers: int) -> int:
    """Workers to start now: those wanted less those running or on their way. Never negative: the
    scaler only adds workers, and each one exits by itself once the queue has been idle a while."""
    return max(0, workers_wanted(depth, micro_batch_size, max_workers) - active_jobs)


class DepthSource(Protocol):
    def depth(self) -> QueueDepth: ...


class WorkerJobs(Protocol):
    def active(self) -> int: ...

    def submit(self, count: int) -> list[str]: ...


@dataclass(frozen=True)
class ScalingDecision:
    depth: QueueDepth
    active_jobs: int
    submitted: list[str]

    def as_log(self) -> dict[str, int]:
        return {
            "visible": self.depth.visible,
            "in_flight": self.depth.in_flight,
            "active_jobs": self.active_jobs,
            "submitted": len(self.submitted),
        }


def scale(
    queue: DepthSource, jobs: WorkerJobs, *, micro_batch_size: int, max_workers: int
) -> ScalingDecision:
    """Look at the queue and the workers once, and submit the workers missing."""
    depth = queue.depth()
    if depth.total == 0:  # the common case: nothing to do, not even list the jobs
        return ScalingDecision(depth, 0, [])
    active = jobs.active()
    count = jobs_to_submit(depth, active, micro_batch_size, max_workers)
    return ScalingDecision(depth, active, jobs.submit(count) if count else [])


def scale_and_report(queue: DepthSource, jobs: WorkerJobs, settings: GpuSettings) -> ScalingDecision:
    """The scaler's run: `scale` with the deployment's settings, logged, and the workers active and
    submitted counted (GpuWorkers, on the dashboard)."""
    decision = scale(
        queue, jobs, micro_batch_size=settings.micro_batch_size, max_workers=settings.max_workers
    )
    logger.info("scaled", extra=decision.as_log())
    telemetry.emit(Metric.GPU_WORKERS, decision.active_jobs, MetricUnit.Count, Dimension.STATE, "active")
    telemetry.emit(
        Metric.GPU_WORKERS, len(decision.submitted), MetricUnit.Count, Dimension.STATE, "submitted"
    )
    return decision
