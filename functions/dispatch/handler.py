"""Dispatch Lambda: work-queue batches -> one execution per study attempt (partial batch failures)."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.parser.models import SqsRecordModel
from aws_lambda_powertools.utilities.parser.types import Json
from aws_lambda_powertools.utilities.typing import LambdaContext

from voxelpipe.adapters.executions import StepFunctionsExecutions
from voxelpipe.adapters.study_table import DynamoStudyStore
from voxelpipe.messages import WorkItem
from voxelpipe.observability import logger, metrics, tracer
from voxelpipe.pipeline.dispatch import dispatch_queued


class WorkRecord(SqsRecordModel):
    body: Json[WorkItem]


processor = BatchProcessor(event_type=EventType.SQS, model=WorkRecord)


def handle_record(record: WorkRecord) -> str:
    return dispatch_queued(
        record.body,
        DynamoStudyStore(),
        StepFunctionsExecutions(),
        queue=record.eventSourceARN.rsplit(":", 1)[-1],
        sent_at=record.attributes.SentTimestamp,
    )


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
    return process_partial_response(
        event=event, record_handler=handle_record, processor=processor, context=context
    )
