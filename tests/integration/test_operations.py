"""Operations against moto: webhook retries with backoff, DLQ redrive, metrics from status changes."""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime
from urllib.parse import urlsplit

import boto3
import pytest

from infra.cli import main as cli
from infra.local.cloud import LocalCloud
from infra.local.studies import submit
from tests.fixtures.receiver import webhook_receiver
from voxelpipe.adapters import http
from voxelpipe.adapters.study_table import DynamoStudyStore
from voxelpipe.pipeline.register import register_study
from voxelpipe.status import StudyStatus
from voxelpipe.status_events import StudyStatusChanged
from voxelpipe.webhook_urls import WebhookTarget
from voxelpipe.webhooks import Delivery, deliver
from voxelpipe.wiring import EVENT_SOURCE, STATUS_CHANGED, EnvVar

STORE = DynamoStudyStore()


def _status_change(study_id: str) -> str:
    detail = StudyStatusChanged(
        study_id=study_id,
        tenant="lab-a",
        attempt=1,
        status="QUEUED",
        previous="VALIDATED",
        at=datetime.now(UTC),
    )
    event = {"id": str(uuid.uuid4()), "source": EVENT_SOURCE, "detail-type": STATUS_CHANGED}
    return json.dumps({**event, "detail": detail.model_dump(mode="json")})


def _sqs_event(queue_url: str, messages: list[dict]) -> dict:
    return {
        "Records": [
            {
                "messageId": m["MessageId"],
                "receiptHandle": m["ReceiptHandle"],
                "body": m["Body"],
                "attributes": {
                    "ApproximateReceiveCount": "1",
                    "SentTimestamp": str(int(time.time() * 1000)),
                    "SenderId": "events.amazonaws.com",
                    "ApproximateFirstReceiveTimestamp": str(int(time.time() * 1000)),
                },
                "messageAttributes": {},
                "md5OfBody": m["MD5OfBody"],
                "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:" + queue_url.rsplit("/", 1)[-1],
                "awsRegion": "us-east-1",
            }
            for m in messages
        ]
    }


def test_a_failed_delivery_fails_alone_and_waits_longer_before_its_retry(
    cloud: LocalCloud, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv(EnvVar.AUTH_MODE, "dev")
    sqs = boto3.client("sqs")
    # A queue of our own, so that no event-source mapping takes the messages before the test does.
    queue = sqs.create_queue(QueueName="test-webhook-batch")["QueueUrl"]
    monkeypatch.setenv(EnvVar.WEBHOOK_QUEUE_URL, queue)
    arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    cloud.deployment.allow("webhook", "sqs:ChangeMessageVisibility", arn)  # as on its own queue
    with webhook_receiver() as (good_url, good), webhook_receiver() as (bad_url, bad):
        bad.status = 503
        fine = register_study(STORE, "lab-a", actor="t", source="t", webhook_url=good_url)
        broken = register_study(STORE, "lab-a", actor="t", source="t", webhook_url=bad_url)
        good.requests.clear()
        for study in (fine, broken):
            sqs.send_message(QueueUrl=queue, MessageBody=_status_change(study.study_id))
        messages = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10, VisibilityTimeout=0)[
            "Messages"
        ]
        by_study = {json.loads(m["Body"])["detail"]["study_id"]: m for m in messages}
        payload, error = cloud.invoke("webhook", _sqs_event(queue, list(by_study.values())))

    assert error is None
    assert payload == {"batchItemFailures": [{"itemIdentifier": by_study[broken.study_id]["MessageId"]}]}
    assert len(good.requests) == 1 and bad.requests
    # The failed message is hidden for its backoff; the delivered one (not deleted here: Lambda's
    # event-source mapping deletes it) is visible again at once.
    visible = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10).get("Messages", [])
    assert [json.loads(m["Body"])["detail"]["study_id"] for m in visible] == [fine.study_id]


def test_admin_redrive_moves_dead_letters_back_to_their_queue(
    cloud: LocalCloud, capsys: pytest.CaptureFixture[str]
):
    sqs = boto3.client("sqs")
    source = cloud.env(EnvVar.HIGH_PRIORITY_QUEUE_URL)
    policy = sqs.get_queue_attributes(QueueUrl=source, AttributeNames=["RedrivePolicy"])["Attributes"]
    dead_letters = sqs.get_queue_url(
        QueueName=json.loads(policy["RedrivePolicy"])["deadLetterTargetArn"].rsplit(":", 1)[-1]
    )["QueueUrl"]
    lost = [f"lost-{n}" for n in range(3)]  # work items of studies that no longer exist
    for study_id in lost:
        body = {"study_id": study_id, "attempt": 1, "tenant": "t", "input_key": "k", "analyses": ["qc"]}
        sqs.send_message(QueueUrl=dead_letters, MessageBody=json.dumps(body))

    args = ["admin", "redrive", "--queue", "HighPriority", "--prefix", "voxelpipe-"]
    assert cli.main([*args, "--dry-run"]) == 0
    assert "would move 3 messages" in capsys.readouterr().out
    before = len(cloud.invocations)
    assert cli.main(args) == 0
    assert "moved 3 messages" in capsys.readouterr().out
    # Back in the work queue, dispatch took each (and skipped it: its study is gone).
    redriven = [
        json.loads(r["body"])["study_id"] for i in cloud.invocations[before:] for r in i.event["Records"]
    ]
    assert sorted(redriven) == lost
    assert sqs.receive_message(QueueUrl=dead_letters).get("Messages", []) == []
    assert cli.main(["admin", "redrive", "--queue", "NoSuchQueue", "--prefix", "voxelpipe-"]) == 1


def test_status_changes_and_rejections_are_emf_metrics(
    cloud: LocalCloud, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
):
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "false")  # the local cloud turns them off
    capsys.readouterr()
    study_id = submit(cloud, b"this is not an image", "scan.nii.gz")
    study = STORE.get_study(study_id)
    assert study.status == StudyStatus.REJECTED
    blobs = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith('{"_aws"')]
    statuses = [b["status"] for b in blobs if "StudyTransitions" in b]
    assert statuses == ["AWAITING_UPLOAD", "VALIDATING", "REJECTED"]
    (rejection,) = [b for b in blobs if "Rejections" in b]
    assert rejection["reason"] == study.reason
    assert [b["step"] for b in blobs if "StepDuration" in b] == ["validate"]
    assert all(
        b["service"] == "voxelpipe" and b["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "Voxelpipe"
        for b in blobs
    )


def test_admin_reap_finds_the_reaper_by_its_tag_and_runs_it_once(
    cloud: LocalCloud, capsys: pytest.CaptureFixture[str]
):
    assert cli.main(["admin", "reap"]) == 0
    assert json.loads(capsys.readouterr().out) == {"reaped": []}
    assert [i.function for i in cloud.invocations] == ["reaper"]


def test_the_alarms_and_dashboard_deploy_into_moto_wired_to_the_topic(cloud: LocalCloud, template: dict):
    in_template = [r for r in template["Resources"].values() if r["Type"] == "AWS::CloudWatch::Alarm"]
    alarms = boto3.client("cloudwatch").describe_alarms()["MetricAlarms"]
    (topic,) = boto3.client("sns").list_topics()["Topics"]
    assert len(alarms) == len(in_template) > 0
    assert all(alarm["AlarmActions"] == [topic["TopicArn"]] for alarm in alarms)
    (dashboard,) = boto3.client("cloudwatch").list_dashboards()["DashboardEntries"]
    body = boto3.client("cloudwatch").get_dashboard(DashboardName=dashboard["DashboardName"])["DashboardBody"]
    assert "StudyTransitions" in json.dumps(json.loads(body))


def test_a_delivery_checks_the_address_again_and_posts_to_the_address_it_checked(cloud: LocalCloud):
    study = register_study(
        STORE, "lab-a", actor="t", source="t", webhook_url="https://hooks.example.org/hook"
    )
    event = StudyStatusChanged(
        study_id=study.study_id, tenant="lab-a", attempt=1, status="QUEUED", at=datetime.now(UTC)
    )
    posted: list[WebhookTarget] = []

    def post(target: WebhookTarget, body: bytes, headers: dict[str, str]) -> int:
        posted.append(target)
        return 204

    def deliver_resolving(*addresses: str) -> Delivery:
        return deliver(
            "e1",
            event,
            STORE,
            deployment_secret=b"s",
            post=post,
            now=int(time.time()),
            allow_local=False,
            resolve=lambda host, port: list(addresses),
        )

    # The name pointed outside at registration; rebound to the metadata address or the VPC since,
    # the delivery is skipped with the reason, and nothing is posted.
    for internal in ("169.254.169.254", "10.0.0.5", "fd00::5"):
        skipped = deliver_resolving("93.184.215.14", internal)
        assert skipped.outcome == "skipped" and internal in skipped.detail, skipped
    assert posted == []
    delivered = deliver_resolving("93.184.215.14")
    assert delivered.outcome == "delivered"
    (target,) = posted
    assert (target.host, target.address, target.port, target.path) == (
        "hooks.example.org",
        "93.184.215.14",
        443,
        "/hook",
    )


def test_the_post_goes_to_the_checked_address_not_to_a_new_lookup_of_the_name():
    with webhook_receiver() as (url, received):
        port = urlsplit(url).port
        assert port is not None
        # hooks.example.org resolves nowhere here: the request reaches the receiver only because
        # the connection goes to the address given, while the Host header names the host.
        target = WebhookTarget(url, "http", "hooks.example.org", port, "/hooks/voxelpipe", "127.0.0.1")
        assert http.post(target, b"{}", {"Content-Type": "application/json"}) == 200
    ((headers, body),) = received.requests
    assert headers["host"] == f"hooks.example.org:{port}" and body == b"{}"
