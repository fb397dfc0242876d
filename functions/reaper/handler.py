"""Reaper Lambda (EventBridge schedule): stuck studies are re-driven or FAILED, with audit rows."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.parser import event_parser
from aws_lambda_powertools.utilities.parser.models import EventBridgeModel
from aws_lambda_powertools.utilities.typing import LambdaContext

from voxelpipe.adapters.executions import StepFunctionsExecutions
from voxelpipe.adapters.identity_maps import DynamoIdentityMaps
from voxelpipe.adapters.queues import SqsWorkQueues
from voxelpipe.adapters.storage import Storage
from voxelpipe.adapters.study_table import DynamoStudyStore
from voxelpipe.observability import logger, metrics, tracer
from voxelpipe.pipeline.reconcile import Reaper


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
@event_parser(model=EventBridgeModel)
def lambda_handler(event: EventBridgeModel, context: LambdaContext) -> dict[str, Any]:
    reaper = Reaper(
        DynamoStudyStore(),
        Storage.from_environment(),
        StepFunctionsExecutions(),
        SqsWorkQueues(),
        DynamoIdentityMaps(),
    )
    return {"reaped": [outcome.as_json() for outcome in reaper.reap()]}
