"""Ingest Lambda: S3 ObjectCreated under uploads/ -> validate -> REJECTED or QUEUED."""

from __future__ import annotations

import os
from dataclasses import asdict
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.idempotency import (
    DynamoDBPersistenceLayer,
    IdempotencyConfig,
    idempotent_function,
)
from aws_lambda_powertools.utilities.parser import parse
from aws_lambda_powertools.utilities.typing import LambdaContext

from voxelpipe.messages import ObjectCreatedNotification, UploadedObject
from voxelpipe.observability import logger, metrics, tracer
from voxelpipe.pipeline.environment import exam_adapters
from voxelpipe.pipeline.ingest import ingest_upload
from voxelpipe.wiring import EnvVar

persistence = DynamoDBPersistenceLayer(table_name=os.environ[EnvVar.IDEMPOTENCY_TABLE])
# The key names the object, never the delivery: a duplicate notification is a new event.
idempotency = IdempotencyConfig(event_key_jmespath="[bucket, key, version]", raise_on_no_idempotency_key=True)


@idempotent_function(  # type: ignore[untyped-decorator]
    data_keyword_argument="upload", config=idempotency, persistence_store=persistence
)
def process(upload: UploadedObject) -> dict[str, Any]:
    outcome = ingest_upload(upload, exam_adapters())
    return asdict(outcome)


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    metrics.add_metric(name="Notifications", unit=MetricUnit.Count, value=1)
    if event.get("Event") == "s3:TestEvent":  # sent once when the notification is configured
        return {"outcomes": []}
    idempotency.register_lambda_context(context)
    notification = parse(event=event, model=ObjectCreatedNotification)
    return {"outcomes": [process(upload=upload) for upload in notification.uploads()]}
