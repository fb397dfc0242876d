"""Reprocess-batches Lambda (EventBridge schedule): each open bulk reprocess batch is advanced —
its studies in flight settled, more opened at low priority within its throttle
(voxelpipe.pipeline.batches)."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.parser import event_parser
from aws_lambda_powertools.utilities.parser.models import EventBridgeModel
from aws_lambda_powertools.utilities.typing import LambdaContext

from voxelpipe.observability import logger, metrics, tracer
from voxelpipe.pipeline.batches import advance_batches
from voxelpipe.pipeline.environment import batch_adapters


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
@event_parser(model=EventBridgeModel)
def lambda_handler(event: EventBridgeModel, context: LambdaContext) -> dict[str, Any]:
    return {"batches": advance_batches(batch_adapters())}
