"""The dispatch function against moto: partial batch failures and duplicate messages."""

from __future__ import annotations

import json

import boto3

from infra.local.cloud import LocalCloud
from voxelpipe import tracking
from voxelpipe.adapters.study_table import DynamoStudyStore
from voxelpipe.messages import WorkItem
from voxelpipe.status import StudyStatus

STORE = DynamoStudyStore()


def _record(message_id: str, body: str) -> dict:
    return {
        "messageId": message_id,
        "receiptHandle": f"handle-{message_id}",
        "body": body,
        "attributes": {
            "ApproximateReceiveCount": "1",
            "SentTimestamp": "1700000000000",
            "SenderId": "AIDAEXAMPLE",
            "ApproximateFirstReceiveTimestamp": "1700000000001",
        },
        "messageAttributes": {},
        "md5OfBody": "0" * 32,
        "eventSource": "aws:sqs",
        "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:work",
        "awsRegion": "us-east-1",
    }


def _queued_study(study_id: str) -> WorkItem:
    tracking.create_study(
        STORE, study_id, "lab", analyses=["qc"], priority="normal", status=StudyStatus.QUEUED
    )
    return WorkItem(
        study_id=study_id, attempt=1, tenant="lab", input_key=f"uploads/lab/{study_id}/x.nii", analyses=["qc"]
    )


def test_a_bad_record_fails_alone_and_duplicates_start_one_execution(cloud: LocalCloud):
    good = _queued_study("a" * 32)
    other = _queued_study("b" * 32)
    event = {
        "Records": [
            _record("m1", good.model_dump_json()),
            _record("m2", "{not json"),
            _record("m3", good.model_dump_json()),  # the same work twice in one batch
            _record("m4", json.dumps({**other.model_dump(mode="json"), "attempt": 0})),  # invalid attempt
            _record("m5", other.model_dump_json()),
        ]
    }
    payload, error = cloud.invoke("dispatch", event)
    assert error is None
    assert payload == {"batchItemFailures": [{"itemIdentifier": "m2"}, {"itemIdentifier": "m4"}]}
    executions = boto3.client("stepfunctions").list_executions(stateMachineArn=cloud.state_machine_arn)[
        "executions"
    ]
    assert sorted(e["name"] for e in executions) == [f"{'a' * 32}-1", f"{'b' * 32}-1"]


def test_a_message_for_a_study_that_moved_on_starts_nothing(cloud: LocalCloud):
    item = _queued_study("c" * 32)
    tracking.transition(STORE, item.study_id, 1, StudyStatus.FAILED)
    payload, error = cloud.invoke("dispatch", {"Records": [_record("m1", item.model_dump_json())]})
    assert error is None and payload == {"batchItemFailures": []}
    executions = boto3.client("stepfunctions").list_executions(stateMachineArn=cloud.state_machine_arn)[
        "executions"
    ]
    assert executions == []
