"""Reference data endpoints (atlases, norms tables) and studies that name them, through the API
against the local cloud (requests act as the API function: its IAM policies hold them)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from fastapi.testclient import TestClient

from infra.local.cloud import LocalCloud
from infra.local.serve import acting_as
from tests.fixtures.reference_data import LABELS, NORMS, label_map, tiny_map
from voxelpipe import tracking
from voxelpipe.adapters.executions import StepFunctionsExecutions
from voxelpipe.adapters.study_table import DynamoStudyStore
from voxelpipe.api.app import create_app
from voxelpipe.api.auth import Role, mint_dev_token
from voxelpipe.function_specs import API
from voxelpipe.messages import ExecutionInput, WorkItem
from voxelpipe.pipeline.dispatch import dispatch
from voxelpipe.status import StudyStatus
from voxelpipe.wiring import EnvVar

STORE = DynamoStudyStore()
ATLAS_FIELDS = {"licence": "CC BY 4.0", "citation": "Test atlas, 2024", "commercial_use": True}


@pytest.fixture
def api(cloud: LocalCloud, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    monkeypatch.setenv(EnvVar.AUTH_MODE, "dev")
    with TestClient(acting_as(cloud, API.name, create_app())) as client:
        yield client


def auth(role: Role = Role.ADMIN, tenant: str = "lab-a") -> dict[str, str]:
    return {"authorization": f"Bearer {mint_dev_token(tenant, role)}"}


def _files(files: dict[str, bytes]) -> list[dict[str, Any]]:
    return [
        {"role": role, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        for role, data in files.items()
    ]


def _register(
    api: TestClient,
    cloud: LocalCloud,
    kind: str,
    name: str,
    files: dict[str, bytes],
    headers: dict[str, str],
    **fields: Any,
) -> Any:
    """POST, upload each file to its presigned target's key, complete: the completion's response."""
    body = {"name": name, **ATLAS_FIELDS, "files": _files(files), **fields}
    created = api.post(f"/references/{kind}", json=body, headers=headers)
    assert created.status_code == 201, created.text
    uploads = created.json()["uploads"]
    assert set(uploads) == set(files) and all(u["method"] == "post" for u in uploads.values())
    for role, data in files.items():
        boto3.client("s3").put_object(Bucket=cloud.bucket, Key=uploads[role]["key"], Body=data)
    scope = fields.get("scope", "tenant")
    return api.post(f"/references/{kind}/{name}/complete", json={"scope": scope}, headers=headers)


def test_admins_register_atlases_operators_norms_and_wrong_roles_are_refused(
    api: TestClient, cloud: LocalCloud
):
    atlas = {"label_map": label_map(tiny_map()), "labels": LABELS.encode()}
    body = {"name": "my-atlas", **ATLAS_FIELDS, "space": "MNI152NLin2009aSym", "files": _files(atlas)}
    for role in (Role.UPLOADER, Role.VIEWER):
        refused = api.post("/references/atlas", json=body, headers=auth(role))
        assert refused.status_code == 403 and refused.json()["code"] == "forbidden"
    early = api.post("/references/atlas", json=body, headers=auth())
    assert early.status_code == 201
    mismatch = api.post("/references/atlas/my-atlas/complete", headers=auth())
    assert mismatch.status_code == 409 and mismatch.json()["code"] == "reference_upload_mismatch"
    done = _register(api, cloud, "atlas", "my-atlas", atlas, auth(), space="MNI152NLin2009aSym")
    assert done.status_code == 200, done.text
    view = done.json()
    assert (view["kind"], view["version"], view["status"], view["scope"]) == ("atlas", 2, "READY", "tenant")
    assert view["summary"]["regions"] == ["hippocampus_left", "hippocampus_right"] and view["commercial_use"]
    listed = api.get("/references/atlas", headers=auth(Role.VIEWER)).json()["items"]
    assert [(r["name"], r["version"], r["status"]) for r in listed] == [
        ("my-atlas", 2, "READY"),
        ("my-atlas", 1, "PENDING"),
    ]
    assert api.get("/references", headers=auth(Role.VIEWER, tenant="lab-b")).json()["items"] == []

    # A label map with a value its table lacks: 409 naming it; an atlas without a space: 422.
    values = tiny_map()
    values[3, 3, 3] = 9
    bad = _register(
        api, cloud, "atlas", "gappy", {**atlas, "label_map": label_map(values)}, auth(), space="MNI"
    )
    assert bad.status_code == 409 and bad.json()["code"] == "reference_invalid"
    assert "values not in the label table: 9" in bad.json()["detail"]
    no_space = api.post("/references/atlas", json={**body, "space": None}, headers=auth())
    assert no_space.status_code == 422 and "space" in no_space.text
    wrong_files = api.post(
        "/references/atlas", json={**body, "files": _files({"table": b"x"})}, headers=auth()
    )
    assert wrong_files.status_code == 422 and wrong_files.json()["errors"][0]["field"] == "files"
    assert api.post("/references/maps", json=body, headers=auth()).status_code == 422  # no such kind

    # Norms tables are deployment-wide: an admin may not register one, an operator may.
    norms = {"table": NORMS.encode()}
    norms_body = {"name": "adult", **ATLAS_FIELDS, "files": _files(norms)}
    for scope in ("tenant", "deployment"):
        refused = api.post("/references/norms", json={**norms_body, "scope": scope}, headers=auth())
        assert refused.status_code == 403, refused.text
    published = _register(api, cloud, "norms", "adult", norms, auth(Role.OPERATOR, "ops"), scope="deployment")
    assert published.status_code == 200 and published.json()["scope"] == "deployment"
    bad_csv = {"table": NORMS.replace(",50,", ",-1,").encode()}
    refused = _register(api, cloud, "norms", "adult", bad_csv, auth(Role.OPERATOR, "ops"), scope="deployment")
    assert refused.status_code == 409 and "line 2: sd must be > 0" in refused.json()["detail"]
    # A tenant's admin cannot retire the deployment's table; the operator can (below).
    assert api.delete("/references/norms/adult", headers=auth()).status_code == 403


def test_studies_name_registered_norms_checked_at_registration_pinned_at_dispatch(
    api: TestClient, cloud: LocalCloud
):
    operator = auth(Role.OPERATOR, "ops")
    assert (
        _register(
            api, cloud, "norms", "adult", {"table": NORMS.encode()}, operator, scope="deployment"
        ).status_code
        == 200
    )
    study = {
        "files": [{"name": "scan.nii.gz", "size": 100}],
        "analyses": ["normative"],
        "age": 40,
        "sex": "F",
    }
    unknown = api.post(
        "/studies",
        json={**study, "parameters": {"normative": {"norms": "child"}}},
        headers=auth(Role.UPLOADER),
    )
    assert unknown.status_code == 422
    (error,) = unknown.json()["errors"]
    assert error["field"] == "parameters.normative.norms" and "no norms child" in error["message"]
    no_version = api.post(
        "/studies",
        json={**study, "parameters": {"normative": {"norms": "adult", "norms_version": 5}}},
        headers=auth(Role.UPLOADER),
    )
    assert (
        no_version.status_code == 422
        and no_version.json()["errors"][0]["field"] == "parameters.normative.norms_version"
    )
    created = api.post(
        "/studies",
        json={**study, "parameters": {"normative": {"norms": "adult"}}},
        headers=auth(Role.UPLOADER, "lab-b"),
    )
    assert created.status_code == 201, created.text

    # A second version published before dispatch: the study runs with it, fixed in its execution.
    assert (
        _register(
            api, cloud, "norms", "adult", {"table": NORMS.encode()}, operator, scope="deployment"
        ).status_code
        == 200
    )
    study_id = created.json()["study_id"]
    for status in (StudyStatus.VALIDATING, StudyStatus.VALIDATED, StudyStatus.QUEUED):
        tracking.transition(STORE, study_id, 1, status)
    item = WorkItem(
        study_id=study_id,
        attempt=1,
        tenant="lab-b",
        input_key=f"uploads/lab-b/{study_id}/x",
        analyses=["normative"],
    )
    assert dispatch(item, STORE, StepFunctionsExecutions()) == "started"
    sfn = boto3.client("stepfunctions")
    (execution,) = sfn.list_executions(stateMachineArn=cloud.state_machine_arn)["executions"]
    started = ExecutionInput.model_validate_json(
        sfn.describe_execution(executionArn=execution["executionArn"])["input"]
    )
    normative = next(r for r in started.analyses if r.name == "normative")
    pin = normative.references["norms"]
    assert (pin.kind, pin.name, pin.owner, pin.version, pin.problem) == (
        "norms",
        "adult",
        "_deployment",
        2,
        None,
    )
    assert normative.uses == []  # regional was not asked for

    retired = api.delete(
        "/references/norms/adult", params={"scope": "deployment", "version": 2}, headers=operator
    )
    assert retired.status_code == 200 and retired.json()["items"][0]["status"] == "RETIRED"
    listed = api.get("/references/norms", headers=auth(Role.VIEWER, "lab-b")).json()["items"]
    assert [(r["version"], r["status"]) for r in listed] == [(2, "RETIRED"), (1, "READY")]
    gone = api.delete("/references/norms/none-such", params={"scope": "deployment"}, headers=operator)
    assert gone.status_code == 404 and gone.json()["code"] == "reference_not_found"
