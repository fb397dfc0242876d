"""The GPU queue as workers and the scaler see it: receive, delete, hide or release, and its depth."""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING

import boto3

from voxelpipe.adapters.queues import QueueDepth, delay_retry, queue_depth
from voxelpipe.wiring import EnvVar

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient

SQS_MAX_MESSAGES = 10  # per ReceiveMessage


@cache
def _client() -> SQSClient:
    return boto3.client("sqs")


@dataclass(frozen=True)
class ReceivedMessage:
    message_id: str
    receipt_handle: str
    body: str


@dataclass(frozen=True)
class GpuQueue:
    url: str

    @classmethod
    def from_environment(cls) -> GpuQueue:
        return cls(os.environ[EnvVar.GPU_QUEUE_URL])

    def receive(self, max_messages: int, wait_s: int) -> list[ReceivedMessage]:
        response = _client().receive_message(
            QueueUrl=self.url,
            MaxNumberOfMessages=max(1, min(SQS_MAX_MESSAGES, max_messages)),
            WaitTimeSeconds=wait_s,
        )
        return [
            ReceivedMessage(
                message_id=message["MessageId"],
                receipt_handle=message["ReceiptHandle"],
                body=message["Body"],
            )
            for message in response.get("Messages", [])
        ]

    def delete(self, receipt_handle: str) -> None:
        _client().delete_message(QueueUrl=self.url, ReceiptHandle=receipt_handle)

    def change_visibility(self, receipt_handle: str, seconds: int) -> None:
        """Hide a message for `seconds` more (0: release it to another worker now)."""
        delay_retry(self.url, receipt_handle, seconds)

    def depth(self) -> QueueDepth:
        return queue_depth(self.url)
