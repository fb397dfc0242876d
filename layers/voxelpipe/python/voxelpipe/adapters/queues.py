"""The work queues: validated studies wait here for an execution."""

from __future__ import annotations

import os
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
}


@cache
def _client() -> SQSClient:
    return boto3.client("sqs")


def enqueue(item: WorkItem) -> str:
    """Send a study attempt to its priority's queue; returns the message id."""
    response = _client().send_message(
        QueueUrl=os.environ[_QUEUE_URL[item.priority]], MessageBody=item.model_dump_json()
    )
    return response["MessageId"]


def backlog(priority: Priority) -> int:
    """Messages waiting in, or in flight from, a priority's queue (approximate, as SQS counts)."""
    attributes = _client().get_queue_attributes(
        QueueUrl=os.environ[_QUEUE_URL[priority]],
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return int(attributes.get("ApproximateNumberOfMessages", 0)) + int(
        attributes.get("ApproximateNumberOfMessagesNotVisible", 0)
    )


def delay_retry(queue_url: str, receipt_handle: str, delay_s: int) -> None:
    """Keep a received message hidden `delay_s` more seconds: its next try waits that long."""
    _client().change_message_visibility(
        QueueUrl=queue_url, ReceiptHandle=receipt_handle, VisibilityTimeout=delay_s
    )
