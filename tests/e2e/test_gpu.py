"""The GPU path end to end on the CPU: task tokens through the GPU queue to local worker threads."""

from __future__ import annotations

import gzip
import json
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

import boto3
import nibabel as nib
import numpy as np
import pytest
from fastapi.testclient import TestClient

from infra.local.cloud import LocalCloud
from infra.local.studies import DEMO_TENANT, submit, wait_for_terminal
from infra.local.template import cached_template
from infra.local.workers import RunnerFactory
from tests.fixtures.bad_nifti import make_good_nifti
from tests.fixtures.cloud import checked_cloud
from tests.fixtures.gpu import GPU_CONTEXT, GPU_RETRY_ATTEMPTS
from tests.fixtures.models import make_threshold_model
from tests.fixtures.scans import mni152_at_2mm
from voxelpipe import analyses
from voxelpipe.adapters.storage import Storage
from voxelpipe.adapters.study_table import DynamoStudyStore
from voxelpipe.analyses import Analysis, AnalysisInput, AnalysisOutput
from voxelpipe.api.app import create_app
from voxelpipe.api.auth import Role, mint_dev_token
from voxelpipe.gpu.service import default_runner
from voxelpipe.gpu.worker import OnResult, Runner, TransientWorkerError
from voxelpipe.gpu_settings import GpuWorkerError
from voxelpipe.inference.registry import publish_model
from voxelpipe.keys import DEPLOYMENT_OWNER, derived_key, results_key
from voxelpipe.messages import AnalysisResult, AnalysisTask
from voxelpipe.nifti import load_nifti
from voxelpipe.ports import StudyStore
from voxelpipe.status import StudyStatus, TaskStatus
from voxelpipe.wiring import EnvVar, Runtime

STORE = DynamoStudyStore()

RETRY_ATTEMPTS = GPU_RETRY_ATTEMPTS


@pytest.fixture(scope="module")
def gpu_template() -> dict[str, Any]:
    return cached_template(GPU_CONTEXT)


@pytest.fixture
def gpu_cloud(gpu_template: dict[str, Any]) -> Iterator[LocalCloud]:
    with checked_cloud(gpu_template) as local:
        yield local


def _voxel_count(inputs: AnalysisInput) -> AnalysisOutput:
    count = int(inputs.image.get_fdata().size)
    return AnalysisOutput(measures={"voxels": count}, artifacts={"count.txt": str(count).encode()})


@pytest.fixture
def gpu_count(monkeypatch: pytest.MonkeyPatch) -> str:
    """A cheap analysis that declares the gpu runtime."""
    analysis = Analysis("gpu-count", "1", Runtime.GPU, "counts voxels on a GPU worker", _voxel_count)
    monkeypatch.setitem(analyses.CATALOGUE, analysis.name, analysis)
    return analysis.name


def _history(cloud: LocalCloud, wait_s: float = 60.0) -> list[dict[str, Any]]:
    """The execution's events once it has ended: the study's record can turn terminal a moment
    before the execution's last events are written (seen under load)."""
    client = boto3.client("stepfunctions")
    (execution,) = client.list_executions(stateMachineArn=cloud.state_machine_arn)["executions"]
    arn = execution["executionArn"]
    deadline = time.monotonic() + wait_s
    while client.describe_execution(executionArn=arn)["status"] == "RUNNING" and time.monotonic() < deadline:
        time.sleep(0.1)
    return client.get_execution_history(executionArn=arn, maxResults=1000)["events"]


def test_tissue_seg_configured_on_gpu_completes_through_the_task_token_path(
    gpu_cloud: LocalCloud, monkeypatch: pytest.MonkeyPatch
):
    # GET /analyses tells clients where this deployment runs each analysis.
    monkeypatch.setenv(EnvVar.AUTH_MODE, "dev")
    token = {"authorization": f"Bearer {mint_dev_token('demo', Role.VIEWER)}"}
    with TestClient(create_app()) as api:
        listed = {a["name"]: a["runtime"] for a in api.get("/analyses", headers=token).json()["items"]}
    assert (listed["tissue-seg"], listed["qc"]) == ("gpu", "lambda")

    study_id = submit(gpu_cloud, mni152_at_2mm(), "mni152_2mm.nii.gz", analyses=["tissue-seg"])
    record = wait_for_terminal([study_id], timeout_s=300)[study_id]
    assert record is not None and record.status == StudyStatus.COMPLETED, record and record.error
    # It ran on a worker (the GPU queue's path), not in the RunAnalysis Lambda.
    assert not [i for i in gpu_cloud.invocations if i.function == "run_analysis"]
    assert gpu_cloud.gpu_workers is not None
    assert sum(r.summary.succeeded for r in gpu_cloud.gpu_workers.workers) == 1
    submitted = [e for e in _history(gpu_cloud) if e["type"] == "TaskSubmitted"]
    assert submitted and all("sqs" in e["taskSubmittedEventDetails"]["resourceType"] for e in submitted)
    keys = Storage(gpu_cloud.bucket).list_keys(derived_key(study_id, "tissue-seg") + "/")
    assert any(key.endswith("labels.nii.gz") for key in keys)
    step = next(t for t in STORE.tasks_of(study_id, 1) if t.step == "analysis:tissue-seg")
    assert step.status == TaskStatus.SUCCEEDED


def test_a_worker_killed_mid_task_is_replaced_and_the_study_completes_on_retry(
    gpu_cloud: LocalCloud, gpu_count: str
):
    assert gpu_cloud.gpu_workers is not None
    killed = threading.Event()
    runs: list[str] = []

    def crashing_then_real(store: StudyStore, storage: Storage) -> Runner:
        real = default_runner(store, storage)

        def run(tasks: Sequence[AnalysisTask], on_result: OnResult) -> Sequence[AnalysisResult | Exception]:
            runs.append(threading.current_thread().name)
            if not killed.is_set():
                killed.set()
                # The worker dies with the message taken: no answer, no more heartbeats.
                raise SystemExit("worker killed mid-task")
            return real(tasks, on_result)

        return run

    _, content = make_good_nifti()
    with gpu_cloud.gpu_workers.runner(crashing_then_real):
        study_id = submit(gpu_cloud, content, "scan.nii.gz", analyses=[gpu_count])
        record = wait_for_terminal([study_id], timeout_s=120)[study_id]
    assert record is not None and record.status == StudyStatus.COMPLETED, record and record.error
    assert len(runs) == 2 and runs[0] != runs[1]  # the retry ran on another worker
    workers = {r.name: r.summary for r in gpu_cloud.gpu_workers.workers}
    assert workers[runs[0]].succeeded == 0 and workers[runs[1]].succeeded == 1
    # The state machine saw the heartbeat time out and sent the task again (a new token).
    events = _history(gpu_cloud)
    assert len([e for e in events if e["type"] == "TaskSubmitted"]) == 2
    assert any(e["type"] == "TaskTimedOut" for e in events)
    keys = Storage(gpu_cloud.bucket).list_keys(derived_key(study_id, gpu_count) + "/")
    assert keys == [derived_key(study_id, gpu_count, "count.txt")]


def _failing(error: Exception, calls: list[str]) -> RunnerFactory:
    """Workers whose runner fails every task with `error`, noting each task's study in `calls`."""

    def factory(store: StudyStore, storage: Storage) -> Runner:
        def run(tasks: Sequence[AnalysisTask], on_result: OnResult) -> Sequence[AnalysisResult | Exception]:
            calls.extend(task.study_id for task in tasks)
            return [error for _ in tasks]

        return run

    return factory


def test_a_task_that_always_fails_transiently_fails_the_study_after_the_configured_attempts(
    gpu_cloud: LocalCloud, gpu_count: str
):
    assert gpu_cloud.gpu_workers is not None
    calls: list[str] = []
    _, content = make_good_nifti()
    with gpu_cloud.gpu_workers.runner(_failing(TransientWorkerError("CUDA out of memory"), calls)):
        study_id = submit(gpu_cloud, content, "scan.nii.gz", analyses=[gpu_count])
        record = wait_for_terminal([study_id], timeout_s=120)[study_id]
    assert record is not None and record.status == StudyStatus.FAILED
    assert len(calls) == 1 + RETRY_ATTEMPTS
    assert record.error["type"] == "TransientWorkerError"
    assert record.error["message"] == "CUDA out of memory"
    assert record.error["retryable"] is True
    failures = [e for e in _history(gpu_cloud) if e["type"] == "TaskFailed"]
    assert [e["taskFailedEventDetails"]["error"] for e in failures] == [GpuWorkerError.TRANSIENT] * 3


def test_an_analysis_error_on_a_worker_fails_the_study_at_once(gpu_cloud: LocalCloud, gpu_count: str):
    assert gpu_cloud.gpu_workers is not None
    calls: list[str] = []
    _, content = make_good_nifti()
    with gpu_cloud.gpu_workers.runner(_failing(ValueError("the model diverged"), calls)):
        study_id = submit(gpu_cloud, content, "scan.nii.gz", analyses=[gpu_count])
        record = wait_for_terminal([study_id], timeout_s=60)[study_id]
    assert record is not None and record.status == StudyStatus.FAILED
    assert len(calls) == 1  # not retried: the same input would fail again
    assert record.error["type"] == "ValueError" and record.error["retryable"] is False
    failed = json.loads(
        next(e for e in _history(gpu_cloud) if e["type"] == "TaskFailed")["taskFailedEventDetails"]["cause"]
    )
    assert failed == {"errorType": "ValueError", "errorMessage": "the model diverged"}


def test_a_registered_torchscript_model_runs_through_the_task_token_path(gpu_cloud: LocalCloud):
    assert gpu_cloud.gpu_workers is not None
    storage = Storage(gpu_cloud.bucket)
    data, spec = make_threshold_model(threshold=0.0, patch_size=(16, 16, 16))
    # The study's tenant's own model, and a deployment-wide one of the same name that labels
    # nothing: the tenant's runs, exactly that one (the labels say which).
    publish_model(DEMO_TENANT, "threshold", data, spec, storage, actor="test")
    nothing, _ = make_threshold_model(threshold=1e9, patch_size=(16, 16, 16))
    publish_model(DEPLOYMENT_OWNER, "threshold", nothing, spec, storage, actor="test")
    _, content = make_good_nifti()
    original = nib.Nifti1Image.from_bytes(gzip.decompress(content))
    study_id = submit(gpu_cloud, content, "scan.nii.gz", analyses=["model:threshold"])
    record = wait_for_terminal([study_id], timeout_s=120)[study_id]
    assert record is not None and record.status == StudyStatus.COMPLETED, record and record.error
    labels = load_nifti(storage.read(derived_key(study_id, "model:threshold", "labels.nii.gz")))
    # A label map in the input's space: its grid, and foreground exactly where the scan is > 0.
    assert labels.shape == original.shape
    np.testing.assert_allclose(labels.affine, original.affine)
    np.testing.assert_array_equal(np.asarray(labels.dataobj) == 1, np.asarray(original.get_fdata()) > 0)
    assert sum(r.summary.succeeded for r in gpu_cloud.gpu_workers.workers) == 1
    step = next(t for t in STORE.tasks_of(study_id, 1) if t.step == "analysis:model:threshold")
    assert step.status == TaskStatus.SUCCEEDED
    results = json.loads(storage.read(results_key(study_id)))
    assert results["analyses"]["model:threshold"]["measures"]["model_scope"] == "tenant"


def test_workers_follow_the_queue_up_to_the_maximum_and_exit_when_idle(gpu_cloud: LocalCloud, gpu_count: str):
    workers = gpu_cloud.gpu_workers
    assert workers is not None and workers.workers == []  # an idle deployment runs no worker
    _, content = make_good_nifti()
    study_ids = [submit(gpu_cloud, content, f"scan{i}.nii.gz", analyses=[gpu_count]) for i in range(5)]
    records = wait_for_terminal(study_ids, timeout_s=120)
    assert {r.status for r in records.values() if r is not None} == {StudyStatus.COMPLETED}
    assert 1 <= workers.peak_workers <= workers.settings.max_workers
    assert sum(r.summary.succeeded for r in workers.workers) == 5
    # Scale to zero: every worker leaves once the queue has been idle for idle_exit_s.
    for record in workers.workers:
        record.thread.join(timeout=10 * workers.settings.idle_exit_s)
    assert [r.summary.exit_reason for r in workers.workers] == ["idle"] * len(workers.workers)
    assert workers.scale_once() == 0  # the queue is empty: nothing to start
