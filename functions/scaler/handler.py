"""Scaler Lambda (EventBridge, every minute): submits GPU worker jobs to follow the GPU queue's depth."""

from __future__ import annotations

import os
from typing import Any

from aws_lambda_powertools.utilities.parser import event_parser
from aws_lambda_powertools.utilities.parser.models import EventBridgeModel
from aws_lambda_powertools.utilities.typing import LambdaContext

from voxelpipe.adapters.batch_jobs import BatchJobs
from voxelpipe.adapters.gpu_queue import GpuQueue
from voxelpipe.gpu.scaling import scale_and_report
from voxelpipe.gpu_settings import GpuSettings
from voxelpipe.observability import logger, metrics, tracer


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
@event_parser(model=EventBridgeModel)
def lambda_handler(event: EventBridgeModel, context: LambdaContext) -> dict[str, Any]:
    decision = scale_and_report(
        GpuQueue.from_environment(), BatchJobs.from_environment(), GpuSettings.from_env(os.environ)
    )
    return {**decision.as_log(), "jobs": decision.submitted}
