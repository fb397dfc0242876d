"""Webhook Lambda: status-change and delivery events (EventBridge -> SQS) -> signed POSTs; failures
retried later."""

from __future__ import annotations

import os
import time
from functools import partial
from typing import Any

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.parser.models import SqsRecordModel
from aws_lambda_powertools.utilities.parser.types import Json
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import BaseModel, ConfigDict, Field

from voxelpipe.adapters import http, queues, secrets
from voxelpipe.adapters.study_table import DynamoStudyStore
from voxelpipe.observability import logger, metrics, tracer
from voxelpipe.status_events import DeliveryOutcome, StudyStatusChanged
from voxelpipe.webhooks import deliver, deliver_with_backoff
from voxelpipe.wiring import EnvVar


class StatusChangeEvent(BaseModel):
    """An EventBridge event as a rule delivers it, reduced to the fields the webhook uses.

    Powertools' EventBridgeModel also requires `account`, which moto's SQS delivery leaves out.
    """

    model_config = ConfigDict(populate_by_name=True)

    id: str
    source: str
    detail_type: str = Field(alias="detail-type")
    # A status change, or a delivery's outcome (Study Delivered, Delivery Failed): each model
    # forbids the other's fields, so the detail is the one it validates as.
    detail: StudyStatusChanged | DeliveryOutcome


class StatusChangeRecord(SqsRecordModel):
    body: Json[StatusChangeEvent]


processor = BatchProcessor(event_type=EventType.SQS, model=StatusChangeRecord)


def handle_record(record: StatusChangeRecord) -> str:
    send = partial(
        deliver,
        record.body.id,
        record.body.detail,
        DynamoStudyStore(),
        deployment_secret=secrets.webhook_secret(),
        post=http.post,
        now=int(time.time()),
        allow_local=os.environ.get(EnvVar.AUTH_MODE) == "dev",
    )
    return deliver_with_backoff(
        send,
        record.body.detail,
        receive_count=int(record.attributes.ApproximateReceiveCount),
        retry_later=partial(queues.delay_retry, os.environ[EnvVar.WEBHOOK_QUEUE_URL], record.receiptHandle),
    ).outcome


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
    return process_partial_response(
        event=event, record_handler=handle_record, processor=processor, context=context
    )
