"""Complete-transfers Lambda (EventBridge schedule): network DICOM exams whose transfers are over
(ended, and quiet for the tenant's period) are routed and queued (voxelpipe.pipeline.transfers)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from aws_lambda_powertools.utilities.parser import event_parser
from aws_lambda_powertools.utilities.parser.models import EventBridgeModel
from aws_lambda_powertools.utilities.typing import LambdaContext

from voxelpipe.observability import logger, metrics, tracer
from voxelpipe.pipeline.environment import exam_adapters
from voxelpipe.pipeline.transfers import complete_transfers


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
@event_parser(model=EventBridgeModel)
def lambda_handler(event: EventBridgeModel, context: LambdaContext) -> dict[str, Any]:
    return {"completed": [asdict(outcome) for outcome in complete_transfers(exam_adapters())]}
