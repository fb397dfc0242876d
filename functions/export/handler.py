"""Export Lambda: API Gateway's GET /measures -> the API's FastAPI app (its cohort export route),
through Mangum. An image with pyarrow for Parquet (function_specs.EXPORT says why)."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext
from mangum import Mangum
from mangum.adapter import DEFAULT_TEXT_MIME_TYPES

from voxelpipe.api.app import create_app
from voxelpipe.api.problems import PROBLEM_JSON
from voxelpipe.observability import logger, metrics, tracer

app = create_app()
# CSV and problem details are text; Parquet is binary (base64 both ways: API Gateway's binary media
# types, infra/api.py).
asgi = Mangum(app, lifespan="off", text_mime_types=[*DEFAULT_TEXT_MIME_TYPES, PROBLEM_JSON])


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    # Powertools and Mangum type the same Lambda context with different protocols.
    return asgi(event, context)  # type: ignore[arg-type]
