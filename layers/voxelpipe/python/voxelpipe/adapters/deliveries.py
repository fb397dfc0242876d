"""Deliveries in DynamoDB (DeliveryRecord) and the delivery queue (SQS): the Deliveries and
DeliveryQueue ports."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from functools import cache
from typing import TYPE_CHECKING

import boto3
from pynamodb.exceptions import PutError

from voxelpipe.adapters.dynamodb import refused_by_condition
from voxelpipe.deliveries import DeliveryMessage, DeliveryStatus, delivery_key
from voxelpipe.records import DeliveryRecord
from voxelpipe.wiring import EnvVar

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient


class DynamoDeliveries:
    """Deliveries on the deliveries table (EnvVar.DELIVERIES_TABLE)."""

    def create(self, record: DeliveryRecord) -> bool:
        try:
            record.save(condition=DeliveryRecord.delivery.does_not_exist())
        except PutError as error:
            if refused_by_condition(error):
                return False
            raise
        return True

    def get(self, study_id: str, attempt: int, destination: str) -> DeliveryRecord | None:
        try:
            return DeliveryRecord.get(study_id, delivery_key(attempt, destination), consistent_read=True)
        except DeliveryRecord.DoesNotExist:
            return None

    def for_study(self, study_id: str) -> list[DeliveryRecord]:
        return list(DeliveryRecord.query(study_id, consistent_read=True))

    def acknowledge(self, record: DeliveryRecord, sop_instance_uid: str) -> None:
        # list_append keeps acknowledgements of a concurrent receive of the same message.
        record.update(
            actions=[
                DeliveryRecord.acknowledged.set(DeliveryRecord.acknowledged.append([sop_instance_uid])),
                DeliveryRecord.updated_at.set(datetime.now(UTC)),
            ],
            condition=DeliveryRecord.delivery.exists(),
        )

    def tried(self, record: DeliveryRecord, status: DeliveryStatus, error: str | None) -> None:
        record.update(
            actions=[
                DeliveryRecord.attempts.add(1),
                DeliveryRecord.status.set(status.value),
                DeliveryRecord.error.remove() if error is None else DeliveryRecord.error.set(error[:2000]),
                DeliveryRecord.updated_at.set(datetime.now(UTC)),
            ],
            condition=DeliveryRecord.delivery.exists(),
        )

    def set_status(self, record: DeliveryRecord, status: DeliveryStatus, error: str | None) -> None:
        record.update(
            actions=[
                DeliveryRecord.status.set(status.value),
                DeliveryRecord.error.remove() if error is None else DeliveryRecord.error.set(error[:2000]),
                DeliveryRecord.updated_at.set(datetime.now(UTC)),
            ],
            condition=DeliveryRecord.delivery.exists(),
        )


@cache
def _sqs() -> SQSClient:
    return boto3.client("sqs")


class SqsDeliveryQueue:
    """The delivery queue (EnvVar.DELIVERY_QUEUE_URL)."""

    def send(self, message: DeliveryMessage) -> None:
        _sqs().send_message(
            QueueUrl=os.environ[EnvVar.DELIVERY_QUEUE_URL], MessageBody=message.model_dump_json()
        )
