"""Prepare Lambda (state machine task): the upload -> canonical RAS volume under work/."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.parser import event_parser
from aws_lambda_powertools.utilities.typing import LambdaContext

from voxelpipe.adapters import secrets
from voxelpipe.adapters.identity_maps import DynamoIdentityMaps
from voxelpipe.adapters.storage import Storage
from voxelpipe.adapters.study_table import DynamoStudyStore
from voxelpipe.messages import ExecutionInput
from voxelpipe.observability import logger, metrics, tracer
from voxelpipe.pipeline.prepare import prepare


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
@event_parser(model=ExecutionInput)
def lambda_handler(event: ExecutionInput, context: LambdaContext) -> dict[str, Any]:
    return prepare(
        event, DynamoStudyStore(), Storage.from_environment(), DynamoIdentityMaps(), secrets.pseudonyms()
    ).model_dump()
