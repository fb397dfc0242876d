"""Uploads through the whole local cloud: S3 -> ingest -> SQS -> dispatch -> state machine -> DynamoDB."""

from __future__ import annotations

import hashlib
import io
import json
from typing import Any

import boto3
import pytest
from PIL import Image

from infra.local.cloud import LocalCloud
from infra.local.samples import mni152_t1_path
from infra.local.studies import report, submit, submit_files, wait_for_terminal
from tests.fixtures.bad_nifti import make_good_nifti
from tests.fixtures.dicom import dicom_cases
from voxelpipe import tracking
from voxelpipe.adapters.study_table import DynamoStudyStore
from voxelpipe.keys import derived_key, results_key
from voxelpipe.status import TERMINAL_STATUSES, StudyStatus, TaskStatus
from voxelpipe.wiring import execution_name

STORE = DynamoStudyStore()


def _executions(cloud: LocalCloud) -> list[dict]:
    return boto3.client("stepfunctions").list_executions(stateMachineArn=cloud.state_machine_arn)[
        "executions"
    ]


def test_the_bundled_scan_completes_with_status_tasks_results_and_audit(cloud: LocalCloud, tmp_path):
    data = mni152_t1_path().read_bytes()
    study_id = submit(cloud, data, "mni152_t1.nii.gz")
    record = wait_for_terminal([study_id], timeout_s=300)[study_id]
    assert record is not None
    assert record.status == StudyStatus.COMPLETED, record.error
    assert record.attempt == 1 and record.results_key == results_key(study_id)

    tasks = {task.step: task for task in STORE.tasks_of(study_id, 1)}
    assert set(tasks) == {"validate", "prepare", "analysis:qc", "finalize"}
    for task in tasks.values():
        assert task.status == TaskStatus.SUCCEEDED and task.progress == 100
        assert task.duration_ms is not None and task.duration_ms >= 0
        assert task.finished_at >= task.started_at

    storage = boto3.client("s3")
    document = json.loads(storage.get_object(Bucket=cloud.bucket, Key=results_key(study_id))["Body"].read())
    assert document["status"] == "COMPLETED"
    assert document["provenance"]["input_sha256"] == hashlib.sha256(data).hexdigest()
    assert document["provenance"]["analyses"] == {"qc": "1.0.0"}
    qc = document["analyses"]["qc"]
    assert qc["measures"]["header"]["dimensions"] == [197, 233, 189]
    for plane in ("axial", "coronal", "sagittal"):
        key = derived_key(study_id, "qc", f"preview_{plane}.png")
        assert key in qc["artifacts"]
        png = storage.get_object(Bucket=cloud.bucket, Key=key)["Body"].read()
        assert Image.open(io.BytesIO(png)).format == "PNG"

    actions = [row.action for row in STORE.audit_trail(study_id)]
    assert actions[:3] == ["registered", "queued", "execution_started"]
    (execution,) = _executions(cloud)
    assert execution["name"] == execution_name(study_id, 1)

    summary = report(cloud, study_id, "mni152_t1.nii.gz", tmp_path)
    assert summary.results is not None and summary.results["qc"] == qc["measures"]
    assert (tmp_path / study_id / "results.json").is_file()
    assert (tmp_path / study_id / "qc" / "preview_axial.png").is_file()
    assert not [i for i in cloud.invocations if i.error], "no handler raised"


def test_duplicate_s3_events_and_sqs_messages_start_exactly_one_execution(cloud: LocalCloud):
    _, content = make_good_nifti(compressed=True)
    study_id = submit(cloud, content, "small.nii.gz")
    assert wait_for_terminal([study_id], timeout_s=120)[study_id].status == StudyStatus.COMPLETED

    (ingest_call,) = [i for i in cloud.invocations if i.function == "ingest" and "Records" in i.event]
    (dispatch_call,) = [i for i in cloud.invocations if i.function == "dispatch"]
    lambda_client = boto3.client("lambda")
    ingest_name = next(n for n, s in cloud.deployment.function_specs.items() if s == "ingest")
    dispatch_name = next(n for n, s in cloud.deployment.function_specs.items() if s == "dispatch")

    # The same S3 notification, delivered again (twice), through Lambda's API.
    for _ in range(2):
        response = lambda_client.invoke(FunctionName=ingest_name, Payload=json.dumps(ingest_call.event))
        assert "FunctionError" not in response
    # The same work message, delivered again: in one batch twice, and once more through the queue.
    record = dispatch_call.event["Records"][0]
    batch = {"Records": [record, {**record, "messageId": "duplicate-delivery"}]}
    response = lambda_client.invoke(FunctionName=dispatch_name, Payload=json.dumps(batch))
    assert json.loads(response["Payload"].read()) == {"batchItemFailures": []}
    boto3.client("sqs").send_message(QueueUrl=_queue_url(record), MessageBody=record["body"])

    assert len(_executions(cloud)) == 1
    assert wait_for_terminal([study_id], timeout_s=60)[study_id].status == StudyStatus.COMPLETED
    assert [row.action for row in STORE.audit_trail(study_id)].count("execution_started") == 1
    assert not [i for i in cloud.invocations if i.error]


def _queue_url(record: dict) -> str:
    name = record["eventSourceARN"].rsplit(":", 1)[-1]
    return boto3.client("sqs").get_queue_url(QueueName=name)["QueueUrl"]


def test_a_study_becomes_terminal_only_after_every_task_has_ended(
    cloud_in_process: LocalCloud, monkeypatch: pytest.MonkeyPatch
):
    """Whoever sees a terminal status (a poller, a webhook) sees every task of the attempt ended."""
    cloud = cloud_in_process  # the transition is watched in this process: Prepare must run here
    running_at_end: dict[str, list[str]] = {}
    transition = tracking.transition

    def watched(store: Any, study_id: str, attempt: int, target: StudyStatus, **kwargs: Any) -> Any:
        if target in TERMINAL_STATUSES:
            running_at_end[study_id] = [
                task.step for task in STORE.tasks_of(study_id, attempt) if task.status == TaskStatus.RUNNING
            ]
        return transition(store, study_id, attempt, target, **kwargs)

    monkeypatch.setattr(tracking, "transition", watched)
    _, good = make_good_nifti(compressed=True)
    completed = submit(cloud, good, "small.nii.gz")  # ends in Finalize
    rejected_at_ingest = submit(cloud, b"not an image", "scan.nii.gz")
    damaged = next(case for case in dicom_cases() if case.found_by_decoding)
    rejected_at_prepare = submit_files(
        cloud, [(f"im{n}.dcm", data) for n, data in enumerate(damaged.instances)], input_format="dicom"
    )
    records = wait_for_terminal([completed, rejected_at_ingest, rejected_at_prepare], timeout_s=120)

    assert records[completed].status == StudyStatus.COMPLETED
    assert records[rejected_at_ingest].status == StudyStatus.REJECTED
    assert records[rejected_at_prepare].status == StudyStatus.REJECTED
    prepare = {task.step: task.status for task in STORE.tasks_of(rejected_at_prepare, 1)}
    assert prepare["prepare"] == TaskStatus.FAILED
    # Its objects leave uploads/ for quarantine/, as those ingest rejects do.
    quarantined = boto3.client("s3").list_objects_v2(
        Bucket=cloud.bucket, Prefix=f"quarantine/demo/{rejected_at_prepare}/"
    )
    assert quarantined["KeyCount"] == len(damaged.instances)
    assert running_at_end == {completed: [], rejected_at_ingest: [], rejected_at_prepare: []}
