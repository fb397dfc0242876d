"""Bulk reprocess through the whole local cloud (issue 18): 20 small studies, a batch that adds an
analysis, progress seen moving, every study reprocessed with its first attempt kept, and the
batch's throttle never exceeded."""

from __future__ import annotations

import time

import boto3
import pytest
from fastapi.testclient import TestClient

from infra.local.cloud import LocalCloud
from infra.local.serve import acting_as
from infra.local.studies import submit, wait_for_terminal
from tests.fixtures.scans import mni152_every
from voxelpipe.adapters.study_table import DynamoStudyStore
from voxelpipe.api.app import create_app
from voxelpipe.api.auth import Role, mint_dev_token
from voxelpipe.function_specs import API
from voxelpipe.keys import derived_key
from voxelpipe.status import StudyStatus
from voxelpipe.wiring import EnvVar

STORE = DynamoStudyStore()
STUDIES = 20
MAX_IN_FLIGHT = 3


def _max_overlap(executions: list[dict]) -> int:
    """The most executions that ran at once."""
    events = sorted(
        [(e["startDate"], 1) for e in executions] + [(e["stopDate"], -1) for e in executions],
        key=lambda event: (event[0], event[1]),
    )
    running = peak = 0
    for _, step in events:
        running += step
        peak = max(peak, running)
    return peak


def test_a_20_study_bulk_reprocess_completes_with_progress_and_nothing_lost(
    cloud: LocalCloud, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv(EnvVar.AUTH_MODE, "dev")
    scan = mni152_every(4)  # a real brain, small: tissue-seg segments it in under a second
    studies = [submit(cloud, scan, f"scan{n}.nii.gz", analyses=["qc"]) for n in range(STUDIES)]
    ended = wait_for_terminal(studies, timeout_s=300)
    assert {record.status for record in ended.values()} == {StudyStatus.COMPLETED}

    admin = {"authorization": f"Bearer {mint_dev_token('demo', Role.ADMIN)}"}
    with TestClient(acting_as(cloud, API.name, create_app())) as api:
        response = api.post(
            "/reprocess-batches",
            json={
                "where": {"status": "COMPLETED", "without_analysis": "volumetrics"},
                "analyses": ["qc", "volumetrics"],
                "max_in_flight": MAX_IN_FLIGHT,
            },
            headers=admin,
        )
        assert response.status_code == 202, response.text
        batch = response.json()
        assert batch["progress"]["selected"] == STUDIES
        seen: list[int] = []
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            view = api.get(f"/reprocess-batches/{batch['batch_id']}", headers=admin).json()
            progress = view["progress"]
            assert progress["in_flight"] <= MAX_IN_FLIGHT, progress
            if not seen or seen[-1] != progress["completed"]:
                seen.append(progress["completed"])
            if progress["done"] and view["finished_at"]:  # the sweep closes it after its last study
                break
            time.sleep(1.0)  # each look reads every row of the batch: look seldom
        assert view["progress"]["done"] and view["finished_at"], view["progress"]
        listed = api.get("/reprocess-batches", headers=admin).json()["items"]
        assert [item["batch_id"] for item in listed] == [batch["batch_id"]]

    # Progress moved in steps, not all at once, and nothing was lost.
    assert len(seen) >= 3 and seen == sorted(seen) and seen[-1] == STUDIES, seen
    assert view["progress"]["completed"] == STUDIES and not view["progress"]["failed"], view["progress"]
    assert {(s["state"], s["attempt"]) for s in view["studies"]} == {("COMPLETED", 2)}
    s3 = boto3.client("s3")
    for study_id in studies:
        record = STORE.get_study(study_id)
        assert record is not None
        assert (record.status, record.attempt, record.priority) == (StudyStatus.COMPLETED, 2, "low")
        assert record.analyses == ["qc", "tissue-seg", "volumetrics"]
        kept = s3.list_objects_v2(Bucket=cloud.bucket, Prefix=derived_key(study_id, "attempts", "1") + "/")
        assert derived_key(study_id, "attempts", "1", "results.json") in {o["Key"] for o in kept["Contents"]}
        (row,) = [row for row in STORE.audit_trail(study_id) if row.action == "reprocess"]
        assert row.detail["batch"] == batch["batch_id"]

    # The throttle held: never more of the batch's executions at once than it allows.
    executions = boto3.client("stepfunctions").list_executions(stateMachineArn=cloud.state_machine_arn)[
        "executions"
    ]
    second = [e for e in executions if e["name"].endswith("-2")]
    assert len(second) == STUDIES
    assert _max_overlap(second) <= MAX_IN_FLIGHT
