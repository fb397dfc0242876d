"""MarkFailed Lambda (state machine Catch): FAILED with the error, unless the execution is stale."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.parser import event_parser
from aws_lambda_powertools.utilities.typing import LambdaContext

from voxelpipe.adapters.study_table import DynamoStudyStore
from voxelpipe.messages import FailureInput
from voxelpipe.observability import logger, metrics, tracer
from voxelpipe.pipeline.failure import mark_failed


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
@event_parser(model=FailureInput)
def lambda_handler(event: FailureInput, context: LambdaContext) -> dict[str, Any]:
    return mark_failed(event, DynamoStudyStore())
