"""Dispatch Lambda: work-queue batches -> one execution per study attempt (partial batch failures)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.parser.models import SqsRecordModel
from aws_lambda_powertools.utilities.parser.types import Json
from aws_lambda_powertools.utilities.typing import LambdaContext

from voxelpipe import telemetry
from voxelpipe.messages import WorkItem
from voxelpipe.observability import logger, metrics, tracer
from voxelpipe.pipeline.dispatch import dispatch
from voxelpipe.telemetry import Dimension, Metric


class WorkRecord(SqsRecordModel):
    body: Json[WorkItem]


processor = BatchProcessor(event_type=EventType.SQS, model=WorkRecord)


def handle_record(record: WorkRecord) -> str:
    # How long the work item waited in its queue (SentTimestamp: when ingest or the API sent it).
    waited_s = (datetime.now(UTC) - record.attributes.SentTimestamp).total_seconds()
    queue = record.eventSourceARN.rsplit(":", 1)[-1]
    telemetry.emit(Metric.QUEUE_AGE, max(0.0, waited_s), MetricUnit.Seconds, Dimension.QUEUE, queue)
    outcome = dispatch(record.body)
    logger.info("dispatched", extra={"study_id": record.body.study_id, "outcome": outcome})
    return outcome


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
    return process_partial_response(
        event=event, record_handler=handle_record, processor=processor, context=context
    )
