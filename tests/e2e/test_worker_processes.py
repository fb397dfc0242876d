"""The local cloud runs the analyses in worker processes (infra/local/processes.py): the real handler,
in another process, against the same cloud, held to the same role; a crash fails only its study."""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from infra.local.cloud import LocalCloud
from infra.local.processes import POOLED_FUNCTIONS, ProcessSettings
from infra.local.studies import submit, wait_for_terminal
from tests.fixtures.bad_nifti import make_good_nifti
from voxelpipe import tracking
from voxelpipe.adapters.study_table import DynamoStudyStore
from voxelpipe.status import StudyStatus
from voxelpipe.wiring import EnvVar

RUN_ANALYSIS = "run_analysis"
THIS_MODULE = __name__


# -- handlers a worker process runs in place of run_analysis's (importable there by name) ---------


def exit_abruptly(event: dict[str, Any], context: Any) -> None:
    """A runtime that dies mid-analysis (as a segfault or the OOM killer would end it)."""
    tracking.start_task(
        DynamoStudyStore(), event["study_id"], event["attempt"], f"analysis:{event['analysis']['name']}"
    )
    os._exit(70)


def read_an_upload(event: dict[str, Any], context: Any) -> None:
    """run_analysis reads derived data, never the uploads: its role must refuse this."""
    key = f"uploads/other/{event['study_id']}/x"
    boto3.client("s3").get_object(Bucket=os.environ[EnvVar.BUCKET], Key=key)


# -- tests ----------------------------------------------------------------------------------------


def _runs_of(cloud: LocalCloud, function: str) -> list[Any]:
    return [i for i in cloud.invocations if i.function == function]


def test_an_analysis_runs_in_a_worker_process_and_the_study_completes(cloud: LocalCloud):
    assert cloud.workers is not None
    _, content = make_good_nifti()
    study_ids = [submit(cloud, content, f"scan{n}.nii.gz", analyses=["qc"]) for n in range(3)]
    records = wait_for_terminal(study_ids, timeout_s=120)
    assert [records[s].status for s in study_ids] == [StudyStatus.COMPLETED] * 3  # type: ignore[union-attr]
    analyses = _runs_of(cloud, RUN_ANALYSIS)
    assert len(analyses) == 3 and all(run.error is None for run in analyses)
    worker_pids = {run.process_id for run in analyses}
    assert os.getpid() not in worker_pids and -1 not in worker_pids
    assert len(worker_pids) <= cloud.workers.size  # the pool's processes, reused
    assert cloud.workers.tasks == 6  # three prepares, three analyses
    # Prepare runs in the workers too (POOLED_FUNCTIONS); everything else in the cloud's own process.
    assert os.getpid() not in {run.process_id for run in _runs_of(cloud, "prepare")}
    in_process = {run.process_id for run in cloud.invocations if run.function not in POOLED_FUNCTIONS}
    assert in_process == {os.getpid()}


def test_a_worker_that_dies_fails_its_study_with_the_error_and_the_pool_recovers(cloud: LocalCloud):
    _, content = make_good_nifti()
    with cloud.override_in_worker(RUN_ANALYSIS, f"{THIS_MODULE}.exit_abruptly"):
        crashed = submit(cloud, content, "scan.nii.gz", analyses=["qc"])
        record = wait_for_terminal([crashed], timeout_s=60)[crashed]
    assert record is not None and record.status == StudyStatus.FAILED
    assert record.error is not None
    assert record.error["type"] == "Runtime.ExitError"
    assert "ended abruptly" in record.error["message"]
    assert record.error["step"] == "analysis:qc"
    # The slot starts a fresh process: the next study completes.
    after = submit(cloud, content, "scan.nii.gz", analyses=["qc"])
    assert wait_for_terminal([after], timeout_s=60)[after].status == StudyStatus.COMPLETED  # type: ignore[union-attr]
    first, second = (run.process_id for run in _runs_of(cloud, RUN_ANALYSIS))
    assert first == -1 and second not in (-1, os.getpid())


def test_a_worker_is_held_to_its_functions_role(template: dict[str, Any]):
    _, content = make_good_nifti()
    with LocalCloud(template, processes=ProcessSettings(processes=1)) as cloud:
        with cloud.override_in_worker(RUN_ANALYSIS, f"{THIS_MODULE}.read_an_upload"):
            study_id = submit(cloud, content, "scan.nii.gz", analyses=["qc"])
            record = wait_for_terminal([study_id], timeout_s=60)[study_id]
        (run,) = _runs_of(cloud, RUN_ANALYSIS)
        (denial,) = cloud.iam.denials
    assert run.process_id != os.getpid() and run.error == "ClientError"
    assert record is not None and record.status == StudyStatus.FAILED
    assert denial.principal == RUN_ANALYSIS
    assert denial.request.action == "s3:GetObject"
    assert denial.request.resource.endswith(f"/uploads/other/{study_id}/x")


def test_the_workers_endpoint_answers_no_one_else(cloud: LocalCloud):
    _, content = make_good_nifti()
    study_id = submit(cloud, content, "scan.nii.gz", analyses=["qc"])
    wait_for_terminal([study_id], timeout_s=60)
    assert cloud.workers is not None
    url = cloud.workers.endpoint.url
    # moto's own API and an S3 listing, unsigned or signed with another key: refused.
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"{url}/moto-api/data.json", timeout=10)
    assert refused.value.code == 403
    stranger = boto3.session.Session().client(
        "s3",
        endpoint_url=url,
        aws_access_key_id="AKIASTRANGER0000000",
        aws_secret_access_key="not-the-workers",
        region_name="us-east-1",
    )
    with pytest.raises(ClientError) as denied:
        stranger.list_objects_v2(Bucket=cloud.bucket)
    assert denied.value.response["Error"]["Code"] == "AccessDenied"


def test_without_worker_processes_the_analyses_run_in_the_clouds_process(template: dict[str, Any]):
    _, content = make_good_nifti()
    with LocalCloud(template, processes=ProcessSettings(processes=0)) as cloud:
        study_id = submit(cloud, content, "scan.nii.gz", analyses=["qc"])
        record = wait_for_terminal([study_id], timeout_s=60)[study_id]
        assert cloud.workers is None
    assert record is not None and record.status == StudyStatus.COMPLETED
    assert {run.process_id for run in cloud.invocations} == {os.getpid()}
