"""Live push: status and step events (EventBridge -> SQS) -> every subscribed WebSocket connection
of the study's tenant (API Gateway Management API); gone connections are deleted."""

from __future__ import annotations

import time
from typing import Any

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.parser.models import SqsRecordModel
from aws_lambda_powertools.utilities.parser.types import Json
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import BaseModel, ConfigDict, Field

from voxelpipe.adapters.connections import DynamoConnectionStore, ManagementApiConnections
from voxelpipe.observability import logger, metrics, tracer
from voxelpipe.pipeline import live
from voxelpipe.status_events import StudyStatusChanged, StudyStepChanged


class StudyEvent(BaseModel):
    """An EventBridge event as a rule delivers it, reduced to what the push uses (moto's SQS
    delivery leaves out `account`, which Powertools' EventBridgeModel requires)."""

    model_config = ConfigDict(populate_by_name=True)

    id: str
    detail_type: str = Field(alias="detail-type")
    # A step event's detail has `step` and `progress`, which a status event's (extra="forbid") refuses.
    detail: StudyStatusChanged | StudyStepChanged


class StudyEventRecord(SqsRecordModel):
    body: Json[StudyEvent]


processor = BatchProcessor(event_type=EventType.SQS, model=StudyEventRecord)


def handle_record(record: StudyEventRecord) -> int:
    return live.push(record.body.detail, DynamoConnectionStore(), ManagementApiConnections(), time.time())


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
    return process_partial_response(
        event=event, record_handler=handle_record, processor=processor, context=context
    )
