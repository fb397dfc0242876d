"""Operators' commands against a deployment: DLQ redrive, and running the reaper once.

They talk to AWS with boto3 and the caller's credentials. Queues are found by name: the stack's
queues are named by CloudFormation `{stack}-{logical id}-{suffix}`, so `--prefix` (default
`Voxelpipe-`, or VOXELPIPE_QUEUE_PREFIX) selects this deployment's; a dead-letter queue is one
that some queue names in its redrive policy (SQS ListDeadLetterSourceQueues).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import boto3

from voxelpipe.adapters.queues import queue_depth
from voxelpipe.function_specs import REAPER
from voxelpipe.wiring import FUNCTION_TAG

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient

DEFAULT_QUEUE_PREFIX = "Voxelpipe-"
QUEUE_PREFIX_ENV = "VOXELPIPE_QUEUE_PREFIX"
REAPER_FUNCTION_ENV = "VOXELPIPE_REAPER_FUNCTION"


@dataclass(frozen=True)
class DeadLetterQueue:
    url: str
    source_urls: tuple[str, ...]

    @property
    def name(self) -> str:
        return self.url.rsplit("/", 1)[-1]


def queue_prefix() -> str:
    return os.environ.get(QUEUE_PREFIX_ENV, DEFAULT_QUEUE_PREFIX)


def dead_letter_queues(sqs: SQSClient, prefix: str) -> list[DeadLetterQueue]:
    found = []
    for page in sqs.get_paginator("list_queues").paginate(QueueNamePrefix=prefix):
        for url in page.get("QueueUrls", []):
            sources = sqs.list_dead_letter_source_queues(QueueUrl=url).get("queueUrls", [])
            if sources:
                found.append(DeadLetterQueue(url, tuple(sources)))
    return found


def redrive(sqs: SQSClient, queue: DeadLetterQueue, *, dry_run: bool = False) -> int:
    """Move every message of a dead-letter queue back to its source queue; how many (or would be).

    Each message is sent, then deleted: a crash in between leaves a copy in both queues, which
    the consumers tolerate (dispatch and ingest are idempotent, webhooks may repeat).
    """
    if len(queue.source_urls) != 1:
        raise ValueError(f"{queue.name} is the dead-letter queue of {len(queue.source_urls)} queues")
    if dry_run:
        return queue_depth(queue.url).visible
    (source,) = queue.source_urls
    moved = 0
    while True:
        received = sqs.receive_message(
            QueueUrl=queue.url,
            MaxNumberOfMessages=10,
            WaitTimeSeconds=0,
            VisibilityTimeout=60,
            MessageAttributeNames=["All"],
        ).get("Messages", [])
        if not received:
            return moved
        for message in received:
            extra: dict[str, Any] = {}
            if message.get("MessageAttributes"):
                extra["MessageAttributes"] = message["MessageAttributes"]
            sqs.send_message(QueueUrl=source, MessageBody=message["Body"], **extra)
            sqs.delete_message(QueueUrl=queue.url, ReceiptHandle=message["ReceiptHandle"])
            moved += 1


def reaper_function() -> str:
    """The deployed reaper: VOXELPIPE_REAPER_FUNCTION, else the function tagged as the reaper."""
    named = os.environ.get(REAPER_FUNCTION_ENV)
    if named:
        return named
    tagging = boto3.client("resourcegroupstaggingapi")
    pages = tagging.get_paginator("get_resources").paginate(
        TagFilters=[{"Key": FUNCTION_TAG, "Values": [REAPER.name]}], ResourceTypeFilters=["lambda:function"]
    )
    arns = [str(item["ResourceARN"]) for page in pages for item in page.get("ResourceTagMappingList", [])]
    if len(arns) != 1:
        raise LookupError(
            f"{len(arns)} functions tagged {FUNCTION_TAG}={REAPER.name}; set {REAPER_FUNCTION_ENV}"
        )
    return arns[0]


def run_reaper(function: str) -> dict[str, Any]:
    """Invoke the reaper once, as its schedule does; its answer (what it reaped)."""
    event = {
        "version": "0",
        "id": "voxelpipe-admin-reap",
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": "000000000000",
        "time": "1970-01-01T00:00:00Z",
        "region": os.environ.get("AWS_REGION", "us-east-1"),
        "resources": [],
        "detail": {},
    }
    response = boto3.client("lambda").invoke(FunctionName=function, Payload=json.dumps(event).encode())
    payload: dict[str, Any] = json.loads(response["Payload"].read() or b"{}")
    if response.get("FunctionError"):
        raise RuntimeError(f"the reaper failed: {payload}")
    return payload
