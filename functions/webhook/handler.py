"""Webhook Lambda: status-change events (EventBridge -> SQS) -> signed POSTs; failures retried later."""

from __future__ import annotations

import os
import time
from typing import Any

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.parser.models import SqsRecordModel
from aws_lambda_powertools.utilities.parser.types import Json
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import BaseModel, ConfigDict, Field

from voxelpipe import telemetry
from voxelpipe.adapters import http, queues, secrets
from voxelpipe.observability import logger, metrics, tracer
from voxelpipe.status_events import StudyStatusChanged
from voxelpipe.telemetry import Dimension, Metric
from voxelpipe.webhooks import DeliveryFailed, deliver, retry_delay_s
from voxelpipe.wiring import EnvVar


class StatusChangeEvent(BaseModel):
    """An EventBridge event as a rule delivers it, reduced to the fields the webhook uses.

    Powertools' EventBridgeModel also requires `account`, which moto's SQS delivery leaves out.
    """

    model_config = ConfigDict(populate_by_name=True)

    id: str
    source: str
    detail_type: str = Field(alias="detail-type")
    detail: StudyStatusChanged


class StatusChangeRecord(SqsRecordModel):
    body: Json[StatusChangeEvent]


processor = BatchProcessor(event_type=EventType.SQS, model=StatusChangeRecord)


def handle_record(record: StatusChangeRecord) -> str:
    try:
        delivery = deliver(
            record.body.id,
            record.body.detail,
            deployment_secret=secrets.webhook_secret(),
            post=http.post,
            now=int(time.time()),
            allow_local=os.environ.get(EnvVar.AUTH_MODE) == "dev",
        )
    except DeliveryFailed:
        # Back off: the message stays hidden longer with each receive, then SQS offers it again.
        delay = retry_delay_s(int(record.attributes.ApproximateReceiveCount))
        queues.delay_retry(os.environ[EnvVar.WEBHOOK_QUEUE_URL], record.receiptHandle, delay)
        telemetry.count(Metric.WEBHOOK_DELIVERIES, Dimension.OUTCOME, "retry")
        logger.warning(
            "webhook delivery failed", extra={"study_id": record.body.detail.study_id, "retry_in_s": delay}
        )
        raise
    telemetry.count(Metric.WEBHOOK_DELIVERIES, Dimension.OUTCOME, delivery.outcome)
    return delivery.outcome


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
    return process_partial_response(
        event=event, record_handler=handle_record, processor=processor, context=context
    )
