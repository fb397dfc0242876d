"""Scaler Lambda (EventBridge, every minute): submits GPU worker jobs to follow the GPU queue's depth."""

from __future__ import annotations

import os
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.parser import event_parser
from aws_lambda_powertools.utilities.parser.models import EventBridgeModel
from aws_lambda_powertools.utilities.typing import LambdaContext

from voxelpipe.adapters.batch_jobs import BatchJobs
from voxelpipe.adapters.gpu_queue import GpuQueue
from voxelpipe.gpu.scaling import scale
from voxelpipe.gpu.settings import GpuSettings
from voxelpipe.observability import logger, metrics, tracer
from voxelpipe.telemetry import Dimension, Metric, emit


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
@event_parser(model=EventBridgeModel)
def lambda_handler(event: EventBridgeModel, context: LambdaContext) -> dict[str, Any]:
    settings = GpuSettings.from_env(os.environ)
    decision = scale(
        GpuQueue.from_environment(),
        BatchJobs.from_environment(),
        micro_batch_size=settings.micro_batch_size,
        max_workers=settings.max_workers,
    )
    logger.info("scaled", extra=decision.as_log())
    emit(Metric.GPU_WORKERS, decision.active_jobs, MetricUnit.Count, Dimension.STATE, "active")
    emit(Metric.GPU_WORKERS, len(decision.submitted), MetricUnit.Count, Dimension.STATE, "submitted")
    return {**decision.as_log(), "jobs": decision.submitted}
