"""Reaper Lambda (EventBridge schedule): stuck studies are re-driven or FAILED, with audit rows."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.parser import event_parser
from aws_lambda_powertools.utilities.parser.models import EventBridgeModel
from aws_lambda_powertools.utilities.typing import LambdaContext

from voxelpipe.observability import logger, metrics, tracer
from voxelpipe.pipeline.reconcile import reap


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
@event_parser(model=EventBridgeModel)
def lambda_handler(event: EventBridgeModel, context: LambdaContext) -> dict[str, Any]:
    outcomes = [outcome.as_json() for outcome in reap()]
    for outcome in outcomes:
        logger.warning("reaped a stuck study", extra=outcome)
    return {"reaped": outcomes}
