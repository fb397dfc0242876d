"""The work queues: validated studies wait here for an execution."""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING

import boto3

from voxelpipe.messages import Priority, WorkItem
from voxelpipe.wiring import EnvVar

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient

_QUEUE_URL = {
    Priority.HIGH: EnvVar.HIGH_PRIORITY_QUEUE_URL,
    Priority.NORMAL: EnvVar.NORMAL_PRIORITY_QUEUE_URL,
    Priority.LOW: EnvVar.LOW_PRIORITY_QUEUE_URL,
}


@cache
def _client() -> SQSClient:
    return boto3.client("sqs")


class SqsWorkQueues:
    """`ports.WorkQueues` on the high, normal and low priority queues (URLs from the environment)."""

    def enqueue(self, item: WorkItem) -> str:
        response = _client().send_message(
            QueueUrl=os.environ[_QUEUE_URL[item.priority]], MessageBody=item.model_dump_json()
        )
        return response["MessageId"]

    def backlog(self, priority: Priority) -> int:
        return queue_depth(os.environ[_QUEUE_URL[priority]]).total


@dataclass(frozen=True)
class QueueDepth:
    visible: int  # waiting for a consumer
    in_flight: int  # received by a consumer and not yet deleted

    @property
    def total(self) -> int:
        return self.visible + self.in_flight


def queue_depth(queue_url: str) -> QueueDepth:
    """A queue's messages, waiting and in flight (approximate, as SQS counts)."""
    attributes = _client().get_queue_attributes(
        QueueUrl=queue_url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return QueueDepth(
        visible=int(attributes.get("ApproximateNumberOfMessages", "0")),
        in_flight=int(attributes.get("ApproximateNumberOfMessagesNotVisible", "0")),
    )


def delay_retry(queue_url: str, receipt_handle: str, delay_s: int) -> None:
    """Keep a received message hidden `delay_s` more seconds: its next try waits that long."""
    _client().change_message_visibility(
        QueueUrl=queue_url, ReceiptHandle=receipt_handle, VisibilityTimeout=delay_s
    )
