"""Finalize Lambda (state machine task): the report, results.json and COMPLETED."""

from __future__ import annotations

from aws_lambda_powertools.utilities.parser import event_parser
from aws_lambda_powertools.utilities.typing import LambdaContext

from voxelpipe.adapters.chromium import ChromiumPdfRenderer
from voxelpipe.adapters.storage import Storage
from voxelpipe.adapters.study_table import DynamoStudyStore
from voxelpipe.messages import FinalizeInput
from voxelpipe.observability import logger, metrics, tracer
from voxelpipe.pipeline.finalize import finalize


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
@event_parser(model=FinalizeInput)
def lambda_handler(event: FinalizeInput, context: LambdaContext) -> dict[str, str]:
    return finalize(event, DynamoStudyStore(), Storage.from_environment(), ChromiumPdfRenderer())
