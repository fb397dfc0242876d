"""Deleting a study while a step runs: in AWS, stopping the execution does not stop a Lambda that is
already running, so the step writes after the delete. Once every execution of the study has ended,
nothing of it remains under any prefix, and nothing brings its record back."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import boto3
import pytest
from fastapi.testclient import TestClient

from infra.local.cloud import LocalCloud
from infra.local.serve import acting_as
from infra.local.studies import wait_for_terminal
from tests.fixtures.bad_nifti import make_good_nifti
from voxelpipe.adapters.executions import StepFunctionsExecutions
from voxelpipe.adapters.identity_maps import DynamoIdentityMaps
from voxelpipe.adapters.queues import SqsWorkQueues
from voxelpipe.adapters.storage import Storage
from voxelpipe.adapters.study_table import DynamoStudyStore
from voxelpipe.api.app import create_app
from voxelpipe.api.auth import Role, mint_dev_token
from voxelpipe.function_specs import API
from voxelpipe.pipeline.reconcile import Reaper
from voxelpipe.status import StudyStatus
from voxelpipe.wiring import EnvVar

STORE = DynamoStudyStore()


@pytest.fixture
def api(cloud: LocalCloud, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    monkeypatch.setenv(EnvVar.AUTH_MODE, "dev")
    with TestClient(acting_as(cloud, API.name, create_app())) as client:
        yield client


def _auth(role: Role) -> dict[str, str]:
    return {"authorization": f"Bearer {mint_dev_token('lab-a', role)}"}


def _every_version_of(cloud: LocalCloud, study_id: str) -> list[str]:
    versions = boto3.client("s3").list_object_versions(Bucket=cloud.bucket)
    return [
        v["Key"]
        for v in versions.get("Versions", []) + versions.get("DeleteMarkers", [])
        if study_id in v["Key"]
    ]


@pytest.mark.parametrize("step", ["prepare", "run_analysis"])
def test_a_study_deleted_while_a_step_runs_keeps_nothing_once_its_execution_ends(
    api: TestClient, cloud: LocalCloud, step: str
):
    real = cloud.handler(step)
    entered, release = threading.Event(), threading.Event()

    def held(event, context):
        entered.set()
        release.wait(timeout=60)
        return real(event, context)  # goes on after the delete, writing as it goes

    _, content = make_good_nifti()
    body = {"files": [{"name": "PATIENT_DOE.nii.gz", "size": len(content)}], "analyses": ["qc"]}
    created = api.post("/studies", json=body, headers=_auth(Role.UPLOADER)).json()
    study_id = created["study_id"]
    try:
        with cloud.override(step, held):
            boto3.client("s3").put_object(Bucket=cloud.bucket, Key=created["uploads"][0]["key"], Body=content)
            assert entered.wait(timeout=60)
            deleted = api.delete(f"/studies/{study_id}", headers=_auth(Role.ADMIN))
            assert deleted.status_code == 200, deleted.text
            release.set()
            assert cloud.wait_for_executions(timeout_s=60)
    finally:
        release.set()
    assert _every_version_of(cloud, study_id) == []
    assert STORE.tasks_of(study_id) == [] and STORE.objects_of(study_id, "") == []
    record = STORE.get_study(study_id)
    assert record is not None and record.status == StudyStatus.DELETED and record.manifest is None
    assert api.get(f"/studies/{study_id}", headers=_auth(Role.VIEWER)).status_code == 404
    # A reaper pass finds nothing more to remove.
    reaper = Reaper(
        STORE, Storage(cloud.bucket), StepFunctionsExecutions(), SqsWorkQueues(), DynamoIdentityMaps()
    )
    reaper.reap()
    assert _every_version_of(cloud, study_id) == []
    assert wait_for_terminal([study_id], timeout_s=1)[study_id].status == StudyStatus.DELETED
