"""Operations in the local cloud: the reaper ends a frozen study; events and signed webhooks."""

from __future__ import annotations

import json
import threading
import time
from datetime import timedelta
from pathlib import Path

import boto3
import pytest
from fastapi.testclient import TestClient

from infra.local.cloud import LocalCloud
from infra.local.studies import submit, wait_for_terminal
from tests.fixtures.bad_nifti import make_good_nifti
from tests.fixtures.receiver import webhook_receiver
from voxelpipe import tracking, webhooks
from voxelpipe.adapters.executions import StepFunctionsExecutions
from voxelpipe.adapters.identity_maps import DynamoIdentityMaps
from voxelpipe.adapters.queues import SqsWorkQueues
from voxelpipe.adapters.storage import Storage
from voxelpipe.adapters.study_table import DynamoStudyStore
from voxelpipe.api.app import create_app
from voxelpipe.api.auth import Role, mint_dev_token
from voxelpipe.function_specs import PREPARE
from voxelpipe.pipeline import reconcile
from voxelpipe.status import StudyStatus, TaskStatus
from voxelpipe.wiring import EVENT_SOURCE, STATUS_CHANGED, EnvVar

STORE = DynamoStudyStore()


def _reaper() -> reconcile.Reaper:
    return reconcile.Reaper(
        STORE, Storage.from_environment(), StepFunctionsExecutions(), SqsWorkQueues(), DynamoIdentityMaps()
    )


def test_a_study_frozen_in_a_step_is_failed_by_the_reaper_with_an_audit_row(cloud: LocalCloud):
    entered, release = threading.Event(), threading.Event()

    def never_answers(event, context):
        # Prepare as far as its first writes, then silence: no answer, no error.
        tracking.transition(STORE, event["study_id"], event["attempt"], StudyStatus.RUNNING)
        tracking.start_task(STORE, event["study_id"], event["attempt"], "prepare")
        entered.set()
        release.wait(timeout=120)
        return {}  # far too late: the execution was stopped meanwhile

    _, content = make_good_nifti()
    try:
        with cloud.override("prepare", never_answers):
            study_id = submit(cloud, content, "scan.nii.gz")
            assert entered.wait(timeout=60)
            # Within its deadline nothing is touched, by the scheduled handler either.
            scheduled = json.loads(Path("events/scheduled_reaper.json").read_text())
            payload, error = cloud.invoke("reaper", scheduled)
            assert error is None and payload == {"reaped": []}
            assert STORE.get_study(study_id).status == StudyStatus.RUNNING
            assert StepFunctionsExecutions().status(study_id, 1) == "RUNNING"

            later = tracking.now() + reconcile.step_deadline("prepare") + timedelta(seconds=1)
            outcomes = _reaper().reap(now=later)
            assert [(o.study_id, o.action) for o in outcomes] == [(study_id, "failed")]
            # Idempotent: the next run finds nothing left to do.
            assert _reaper().reap(now=later) == []
    finally:
        release.set()
    # The stuck execution was stopped: moto applies the stop once the step returns.
    assert cloud.wait_for_executions(timeout_s=30)
    assert StepFunctionsExecutions().status(study_id, 1) == "ABORTED"

    study = STORE.get_study(study_id)
    assert study.status == StudyStatus.FAILED
    assert study.error["type"] == "Stuck" and study.error["step"] == "prepare"
    assert "prepare ran past its deadline" in study.error["message"]
    (prepare,) = [t for t in STORE.tasks_of(study_id, 1) if t.step == "prepare"]
    assert prepare.status == TaskStatus.FAILED
    (row,) = [row for row in STORE.audit_trail(study_id) if row.action == "reaped"]
    assert row.actor == "reaper" and row.source == f"{study_id}-1"
    assert row.detail["action"] == "failed" and row.detail["status_was"] == "RUNNING"
    assert row.detail["execution"] == "RUNNING"


def test_a_queued_study_whose_execution_never_started_is_redriven_and_completes(cloud: LocalCloud):
    swallowed = []

    def lost(event, context):  # dispatch "succeeds" without starting anything: the message is gone
        swallowed.append(event)
        return {"batchItemFailures": []}

    _, content = make_good_nifti()
    with cloud.override("dispatch", lost):
        study_id = submit(cloud, content, "scan.nii.gz")
    assert swallowed and STORE.get_study(study_id).status == StudyStatus.QUEUED

    later = tracking.now() + reconcile.DEADLINES[StudyStatus.QUEUED] + timedelta(seconds=1)
    (outcome,) = _reaper().reap(now=later)
    assert outcome.action == "redriven"
    record = wait_for_terminal([study_id], timeout_s=120)[study_id]
    assert record.status == StudyStatus.COMPLETED
    (row,) = [row for row in STORE.audit_trail(study_id) if row.action == "reaped"]
    assert row.detail["action"] == "redriven" and row.detail["execution"] is None


def _drain(queue_url: str, study_id: str, last: str, timeout_s: float = 30) -> list[dict]:
    """The study's events from the queue, up to and including the one with status `last`.

    The bus delivers to each rule's targets in turn, so this queue may get an event a moment after
    the webhook did: read until the last one is in, not just until the queue looks empty.
    """
    sqs = boto3.client("sqs")
    events: list[dict] = []
    deadline = time.monotonic() + timeout_s
    while not any(e["detail"]["status"] == last for e in events) and time.monotonic() < deadline:
        for message in sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1).get(
            "Messages", []
        ):
            event = json.loads(message["Body"])
            if event["detail"]["study_id"] == study_id:
                events.append(event)
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
    return events


@pytest.fixture
def status_changes(cloud: LocalCloud) -> str:
    """A queue receiving every status change of the study bus, as a consumer's rule would (its
    pattern names the detail-type: the bus carries step changes too)."""
    sqs, bus = boto3.client("sqs"), cloud.env(EnvVar.EVENT_BUS_NAME)
    url = sqs.create_queue(QueueName="test-status-changes")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    events = boto3.client("events")
    events.put_rule(
        Name="test-consumer",
        EventBusName=bus,
        EventPattern=json.dumps({"source": [EVENT_SOURCE], "detail-type": [STATUS_CHANGED]}),
    )
    events.put_targets(Rule="test-consumer", EventBusName=bus, Targets=[{"Id": "queue", "Arn": arn}])
    return url


def test_every_status_change_is_an_event_in_order_and_a_signed_webhook(
    cloud: LocalCloud, status_changes: str, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv(EnvVar.AUTH_MODE, "dev")  # development auth: http://127.0.0.1 hooks allowed
    _, content = make_good_nifti()
    auth = {"authorization": f"Bearer {mint_dev_token('lab-a', Role.UPLOADER)}"}
    with webhook_receiver() as (url, received), TestClient(create_app()) as api:
        response = api.post(
            "/studies",
            json={"webhook_url": url, "files": [{"name": "scan.nii.gz", "size": len(content)}]},
            headers=auth,
        )
        assert response.status_code == 201, response.text
        created = response.json()
        study_id = created["study_id"]
        boto3.client("s3").put_object(Bucket=cloud.bucket, Key=created["uploads"][0]["key"], Body=content)
        assert wait_for_terminal([study_id], timeout_s=120)[study_id].status == StudyStatus.COMPLETED
        received.wait_for(6, timeout_s=60)  # one delivery a status change: the last trails COMPLETED
        deliveries = list(received.requests)
        view = api.get(f"/studies/{study_id}", headers=auth).json()

    # The completed study shows what it used: each step's GB-seconds from its task row and memory.
    cost = view["cost"]
    steps = {step["step"]: step["duration_ms"] for step in view["steps"]}
    assert set(cost["lambda_gb_seconds_by_step"]) == set(steps)
    assert cost["lambda_gb_seconds_by_step"]["prepare"] == pytest.approx(
        steps["prepare"] / 1000 * PREPARE.memory_mb / 1024, abs=1e-3
    )
    assert cost["gpu_seconds"] == 0 and cost["estimated_usd"] > 0
    assert cost["requests"]["lambda_invocations"] == len(steps) + 1  # and dispatch

    lifecycle = ["AWAITING_UPLOAD", "VALIDATING", "VALIDATED", "QUEUED", "RUNNING", "COMPLETED"]
    events = _drain(status_changes, study_id, last="COMPLETED")
    assert [e["detail"]["status"] for e in events] == lifecycle
    assert [e["detail"]["previous"] for e in events] == [None, *lifecycle[:-1]]
    assert {(e["source"], e["detail-type"]) for e in events} == {(EVENT_SOURCE, STATUS_CHANGED)}
    assert all(e["detail"]["tenant"] == "lab-a" and e["detail"]["attempt"] == 1 for e in events)

    # The webhook got the same changes, each signed with the key POST /studies returned.
    key = created["webhook_secret"]
    assert [json.loads(body)["detail"]["status"] for _, body in deliveries] == lifecycle
    for headers, body in deliveries:
        assert webhooks.verify(key, body, headers["voxelpipe-signature"], now=time.time())
        assert headers["voxelpipe-event-id"] == json.loads(body)["id"]
    headers, body = deliveries[-1]
    assert not webhooks.verify(
        key, body.replace(b"COMPLETED", b"FAILED"), headers["voxelpipe-signature"], time.time()
    )
    assert not webhooks.verify("another-key", body, headers["voxelpipe-signature"], now=time.time())
