"""Failures inside the state machine: transient ones retry, the rest end FAILED with the error."""

from __future__ import annotations

import json
from pathlib import Path

import boto3
import pytest

from infra.local.cloud import LocalCloud
from infra.local.studies import submit, wait_for_terminal
from tests.fixtures.bad_nifti import make_good_nifti
from voxelpipe import tracking
from voxelpipe.adapters.chromium import CHROMIUM_ENV
from voxelpipe.adapters.storage import Storage
from voxelpipe.adapters.study_table import DynamoStudyStore
from voxelpipe.pipeline import report as pipeline_report
from voxelpipe.status import StudyStatus, TaskStatus

STORE = DynamoStudyStore()

# Lambda reports an exception's class name as the error; the platform's own errors carry dots.
ServiceException = type("Lambda.ServiceException", (Exception,), {})


def test_an_analysis_error_fails_the_study_with_the_error_and_step(cloud: LocalCloud):
    def broken(event, context):
        tracking.start_task(
            STORE, event["study_id"], event["attempt"], f"analysis:{event['analysis']['name']}"
        )
        raise ValueError("the analysis could not converge")

    _, content = make_good_nifti()
    with cloud.override("run_analysis", broken):
        study_id = submit(cloud, content, "scan.nii.gz")
        record = wait_for_terminal([study_id], timeout_s=60)[study_id]
    assert record.status == StudyStatus.FAILED
    assert record.error == {
        "type": "ValueError",
        "message": "the analysis could not converge",
        "step": "analysis:qc",
        "retryable": False,
    }
    steps = {task.step: task.status for task in STORE.tasks_of(study_id, 1)}
    assert steps == {
        "validate": TaskStatus.SUCCEEDED,
        "prepare": TaskStatus.SUCCEEDED,
        "analysis:qc": TaskStatus.FAILED,
    }
    # MarkFailed marks the study (then writes its audit row) before the execution reaches its
    # Fail state: the row is there once the execution has ended.
    assert cloud.wait_for_executions(timeout_s=30)
    assert "failed" in [row.action for row in STORE.audit_trail(study_id)]
    (execution,) = boto3.client("stepfunctions").list_executions(stateMachineArn=cloud.state_machine_arn)[
        "executions"
    ]
    assert execution["status"] == "FAILED"


def test_a_transient_lambda_error_is_retried_and_the_study_completes(cloud: LocalCloud):
    calls = []
    real_prepare = cloud.handler("prepare")

    def flaky(event, context):
        calls.append(event)
        if len(calls) == 1:
            raise ServiceException("throttled")
        return real_prepare(event, context)

    _, content = make_good_nifti()
    with cloud.override("prepare", flaky):
        study_id = submit(cloud, content, "scan.nii.gz")
        record = wait_for_terminal([study_id], timeout_s=60)[study_id]
    assert record.status == StudyStatus.COMPLETED
    assert len(calls) == 2


def test_a_finalize_error_records_the_failed_step(cloud: LocalCloud):
    def broken_finalize(event, context):
        tracking.start_task(STORE, event["study_id"], event["attempt"], "finalize")
        raise RuntimeError("disk full")

    _, content = make_good_nifti()
    with cloud.override("finalize", broken_finalize):
        study_id = submit(cloud, content, "scan.nii.gz")
        record = wait_for_terminal([study_id], timeout_s=60)[study_id]
    assert record.status == StudyStatus.FAILED
    assert record.error["step"] == "finalize" and record.error["message"] == "disk full"
    finalize = next(t for t in STORE.tasks_of(study_id, 1) if t.step == "finalize")
    assert finalize.status == TaskStatus.FAILED and finalize.error["type"] == "RuntimeError"


def _results(record) -> dict:
    return json.loads(Storage.from_environment().read(record.results_key))


def test_a_pdf_that_cannot_be_printed_leaves_the_study_completed(
    cloud: LocalCloud, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
):
    crashing = tmp_path / "chromium"
    crashing.write_text("#!/bin/sh\necho 'Trace/breakpoint trap' >&2\nexit 133\n")
    crashing.chmod(0o755)
    monkeypatch.setenv(CHROMIUM_ENV, str(crashing))
    _, content = make_good_nifti()
    study_id = submit(cloud, content, "scan.nii.gz")
    record = wait_for_terminal([study_id], timeout_s=60)[study_id]
    assert record.status == StudyStatus.COMPLETED
    report = _results(record)["report"]
    assert report["html"] == {"status": "available", "key": f"derived/{study_id}/report.html"}
    assert report["pdf"]["status"] == "unavailable"
    assert "exited with 133 before printing: Trace/breakpoint trap" in report["pdf"]["error"]
    assert record.report["pdf"] == report["pdf"]


def test_a_report_that_cannot_be_built_leaves_the_study_completed(
    cloud: LocalCloud, monkeypatch: pytest.MonkeyPatch
):
    def broken(*args, **kwargs):
        raise MemoryError("no room for the figures")

    monkeypatch.setattr(pipeline_report, "build_report", broken)
    _, content = make_good_nifti()
    study_id = submit(cloud, content, "scan.nii.gz")
    record = wait_for_terminal([study_id], timeout_s=60)[study_id]
    assert record.status == StudyStatus.COMPLETED
    document = _results(record)
    assert document["analyses"]["qc"]["measures"]["header"]
    assert document["report"]["html"] == {
        "status": "unavailable",
        "error": "MemoryError: no room for the figures",
    }
    assert document["report"]["pdf"]["status"] == "unavailable"
