"""Bring-your-own-model endpoints and `model:NAME` analyses, through the API against the local cloud."""

from __future__ import annotations

import json
from collections.abc import Iterator

import boto3
import pytest
from fastapi.testclient import TestClient

from infra.local.cloud import LocalCloud
from infra.local.serve import acting_as
from tests.fixtures.models import make_brain_age_model, make_threshold_model
from voxelpipe import tracking
from voxelpipe.adapters.executions import StepFunctionsExecutions
from voxelpipe.adapters.study_table import DynamoStudyStore
from voxelpipe.api.app import create_app
from voxelpipe.api.auth import Role, mint_dev_token
from voxelpipe.function_specs import API
from voxelpipe.inference.spec import MAX_LAMBDA_MODEL_BYTES
from voxelpipe.messages import ExecutionInput, WorkItem
from voxelpipe.pipeline.dispatch import dispatch
from voxelpipe.status import StudyStatus
from voxelpipe.wiring import EnvVar

STORE = DynamoStudyStore()


@pytest.fixture
def api(cloud: LocalCloud, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    monkeypatch.setenv(EnvVar.AUTH_MODE, "dev")
    # Requests act as the API function: its role's policies hold them (infra/local/iam.py).
    with TestClient(acting_as(cloud, API.name, create_app())) as client:
        yield client


def auth(role: Role = Role.ADMIN, tenant: str = "lab-a") -> dict[str, str]:
    return {"authorization": f"Bearer {mint_dev_token(tenant, role)}"}


def _register(
    api: TestClient,
    cloud: LocalCloud,
    name: str = "threshold",
    *,
    headers: dict[str, str] | None = None,
    scope: str = "tenant",
    threshold: float = 100.0,
) -> dict:
    headers = headers or auth()
    data, spec = make_threshold_model(threshold, patch_size=(16, 16, 16))
    body = {"name": name, "spec": json.loads(spec.model_dump_json()), "size": len(data), "scope": scope}
    created = api.post("/models", json=body, headers=headers)
    assert created.status_code == 201, created.text
    upload = created.json()["upload"]
    assert upload["method"] == "post" and upload["fields"]["key"] == upload["key"]
    early = api.post(f"/models/{name}/complete", json={"scope": scope}, headers=headers)
    assert early.status_code == 409 and early.json()["code"] == "model_upload_mismatch"
    boto3.client("s3").put_object(Bucket=cloud.bucket, Key=upload["key"], Body=data)
    done = api.post(f"/models/{name}/complete", json={"scope": scope}, headers=headers)
    assert done.status_code == 200, done.text
    return done.json()


def test_admins_register_models_that_then_appear_as_gpu_analyses(api: TestClient, cloud: LocalCloud):
    model = _register(api, cloud)
    assert model["status"] == "READY" and model["version"] == 1 and model["analysis"] == "model:threshold"
    assert len(model["sha256"]) == 64 and model["scope"] == "tenant"
    listed = api.get("/models", headers=auth(Role.VIEWER)).json()["items"]
    assert [(m["name"], m["version"], m["status"]) for m in listed] == [("threshold", 1, "READY")]
    assert api.get("/models", headers=auth(Role.VIEWER, tenant="lab-b")).json()["items"] == []
    items = {a["name"]: a for a in api.get("/analyses", headers=auth(Role.VIEWER)).json()["items"]}
    entry = items["model:threshold"]
    assert entry["runtime"] == "gpu" and entry["version"] == "1"
    assert entry["labels"] == {"0": "background", "1": "foreground"}
    assert entry["spec"]["patch_size"] == [16, 16, 16] and "qc" in items

    # Studies may now ask for it; an unregistered model is an unknown analysis.
    body = {"files": [{"name": "scan.nii.gz", "size": 100}], "analyses": ["qc", "model:threshold"]}
    created = api.post("/studies", json=body, headers=auth(Role.UPLOADER))
    assert created.status_code == 201, created.text
    unknown = api.post("/studies", json={**body, "analyses": ["model:nope"]}, headers=auth(Role.UPLOADER))
    assert unknown.status_code == 422 and unknown.json()["errors"][0]["field"] == "analyses"
    assert "model:nope" in unknown.json()["errors"][0]["message"]

    # Dispatch sends it to the GPU runtime at the model's READY version.
    study_id = created.json()["study_id"]
    tracking.transition(STORE, study_id, 1, StudyStatus.VALIDATING)
    tracking.transition(STORE, study_id, 1, StudyStatus.VALIDATED)
    tracking.transition(STORE, study_id, 1, StudyStatus.QUEUED)
    item = WorkItem(
        study_id=study_id,
        attempt=1,
        tenant="lab-a",
        input_key=f"uploads/lab-a/{study_id}/scan.nii.gz",
        analyses=["qc", "model:threshold"],
    )
    assert dispatch(item, STORE, StepFunctionsExecutions()) == "started"
    sfn = boto3.client("stepfunctions")
    (execution,) = sfn.list_executions(stateMachineArn=cloud.state_machine_arn)["executions"]
    started = ExecutionInput.model_validate_json(
        sfn.describe_execution(executionArn=execution["executionArn"])["input"]
    )
    requests = {r.name: r for r in started.analyses}
    assert requests["model:threshold"].runtime == "gpu" and requests["model:threshold"].version == "1"
    assert requests["model:threshold"].model_owner == "lab-a"
    # Another tenant has no model:threshold.
    foreign = api.post("/studies", json=body, headers=auth(Role.UPLOADER, tenant="lab-b"))
    assert foreign.status_code == 422 and foreign.json()["errors"][0]["field"] == "analyses"


def test_model_endpoints_refuse_bad_input_and_non_admins(api: TestClient, cloud: LocalCloud):
    data, spec = make_threshold_model(100.0)
    good = {"name": "m1", "spec": json.loads(spec.model_dump_json()), "size": len(data)}
    for role in (Role.UPLOADER, Role.VIEWER):
        refused = api.post("/models", json=good, headers=auth(role))
        assert refused.status_code == 403 and refused.json()["code"] == "forbidden"
        assert api.post("/models/m1/complete", headers=auth(role)).status_code == 403
    bad_spec = {**good["spec"], "labels": {"1": "x"}, "overlap": 1.5, "orientation": "RRS"}
    response = api.post("/models", json={**good, "spec": bad_spec}, headers=auth())
    assert response.status_code == 422 and response.headers["content-type"] == "application/problem+json"
    fields = {e["field"] for e in response.json()["errors"]}
    assert {"spec.labels", "spec.overlap", "spec.orientation"} <= fields
    bad = api.post("/models", json={**good, "name": "Bad/Name", "size": 0, "sha256": "xyz"}, headers=auth())
    assert bad.status_code == 422
    assert {e["field"] for e in bad.json()["errors"]} == {"name", "size", "sha256"}
    missing = api.post("/models/none-such/complete", headers=auth())
    assert missing.status_code == 404 and missing.json()["code"] == "model_not_found"
    created = api.post("/models", json={**good, "sha256": "0" * 64}, headers=auth()).json()
    boto3.client("s3").put_object(Bucket=cloud.bucket, Key=created["upload"]["key"], Body=data)
    mismatch = api.post("/models/m1/complete", json={"version": 1}, headers=auth())
    assert mismatch.status_code == 409 and "sha256" in mismatch.json()["detail"]
    assert api.get("/models", headers=auth()).json()["items"][0]["status"] == "PENDING"


def test_retiring_a_version_rolls_model_name_back_and_deletes_its_files(api: TestClient, cloud: LocalCloud):
    for _ in range(2):
        _register(api, cloud)
    s3 = boto3.client("s3")

    def files(version: int) -> list[str]:
        listing = s3.list_object_versions(Bucket=cloud.bucket, Prefix=f"models/lab-a/threshold/{version}/")
        return [v["Key"] for v in listing.get("Versions", []) + listing.get("DeleteMarkers", [])]

    def offered() -> dict[str, str]:
        items = api.get("/analyses", headers=auth(Role.VIEWER)).json()["items"]
        return {a["name"]: a["version"] for a in items if a["name"].startswith("model:")}

    assert offered() == {"model:threshold": "2"} and files(2)
    for role in (Role.UPLOADER, Role.VIEWER):
        assert api.delete("/models/threshold", headers=auth(role)).status_code == 403

    retired = api.delete("/models/threshold", params={"version": 2}, headers=auth())
    assert retired.status_code == 200, retired.text
    (view,) = retired.json()["items"]
    assert (view["version"], view["status"]) == (2, "RETIRED") and view["retired_at"]
    # model:threshold now runs version 1; version 2's files are gone (every S3 version of them),
    # its record stays (results that name it keep its sha256), and it cannot be completed again.
    assert offered() == {"model:threshold": "1"} and files(2) == [] and files(1)
    listed = api.get("/models", headers=auth()).json()["items"]
    assert [(m["version"], m["status"]) for m in listed] == [(2, "RETIRED"), (1, "READY")]
    again = api.post("/models/threshold/complete", json={"version": 2}, headers=auth())
    assert again.status_code == 409 and again.json()["code"] == "model_retired"
    assert api.delete("/models/threshold", params={"version": 2}, headers=auth()).status_code == 200

    # Retiring every version takes model:threshold out of the catalogue.
    everything = api.delete("/models/threshold", headers=auth()).json()["items"]
    assert {m["status"] for m in everything} == {"RETIRED"} and offered() == {} and files(1) == []
    body = {"files": [{"name": "scan.nii.gz", "size": 100}], "analyses": ["model:threshold"]}
    refused = api.post("/studies", json=body, headers=auth(Role.UPLOADER))
    assert refused.status_code == 422 and refused.json()["errors"][0]["field"] == "analyses"
    for missing in ("/models/none-such", "/models/threshold?version=9"):
        gone = api.delete(missing, headers=auth())
        assert gone.status_code == 404 and gone.json()["code"] == "model_not_found"


def test_operators_publish_deployment_wide_models_tenants_use_but_cannot_change(
    api: TestClient, cloud: LocalCloud
):
    operator = auth(Role.OPERATOR, tenant="ops")
    data, spec = make_threshold_model(100.0, patch_size=(16, 16, 16))
    body = {"name": "shared", "spec": json.loads(spec.model_dump_json()), "size": len(data)}
    # Only an operator publishes deployment-wide.
    refused = api.post("/models", json={**body, "scope": "deployment"}, headers=auth())
    assert refused.status_code == 403 and refused.json()["code"] == "forbidden"
    published = _register(api, cloud, "shared", headers=operator, scope="deployment")
    assert published["scope"] == "deployment"
    assert (
        boto3.client("s3").list_objects_v2(Bucket=cloud.bucket, Prefix="models/_deployment/shared/1/")[
            "KeyCount"
        ]
        == 2
    )  # the file and model.json

    # Every tenant sees it and may run it...
    for tenant in ("lab-a", "lab-b"):
        models = api.get("/models", headers=auth(Role.VIEWER, tenant=tenant)).json()["items"]
        assert [(m["name"], m["scope"]) for m in models] == [("shared", "deployment")]
        items = {
            a["name"]: a for a in api.get("/analyses", headers=auth(Role.VIEWER, tenant)).json()["items"]
        }
        assert items["model:shared"]["scope"] == "deployment"
        study = {"files": [{"name": "scan.nii.gz", "size": 100}], "analyses": ["model:shared"]}
        assert api.post("/studies", json=study, headers=auth(Role.UPLOADER, tenant)).status_code == 201
    # ...but no tenant's admin changes it: with or without scope deployment.
    for call in (
        lambda h: api.post("/models/shared/complete", headers=h),
        lambda h: api.post("/models/shared/complete", json={"scope": "deployment"}, headers=h),
        lambda h: api.delete("/models/shared", headers=h),
        lambda h: api.delete("/models/shared", params={"scope": "deployment"}, headers=h),
    ):
        answer = call(auth(Role.ADMIN, tenant="lab-b"))
        assert answer.status_code == 403 and answer.json()["code"] == "forbidden", answer.text
    # A tenant's own model of the same name wins for that tenant, and only for it.
    own = _register(api, cloud, "shared", headers=auth(Role.ADMIN, tenant="lab-a"), threshold=5.0)
    assert (own["scope"], own["version"]) == ("tenant", 1)
    scopes = {
        tenant: {
            a["name"]: a.get("scope")
            for a in api.get("/analyses", headers=auth(tenant=tenant)).json()["items"]
        }
        for tenant in ("lab-a", "lab-b")
    }
    assert scopes["lab-a"]["model:shared"] == "tenant" and scopes["lab-b"]["model:shared"] == "deployment"
    # The operator retires the deployment's; lab-a's own stays.
    retired = api.delete("/models/shared", params={"scope": "deployment"}, headers=operator)
    assert retired.status_code == 200 and [m["scope"] for m in retired.json()["items"]] == ["deployment"]
    assert [m["status"] for m in api.get("/models", headers=auth(tenant="lab-a")).json()["items"]] == [
        "READY",
        "RETIRED",
    ]
    assert "model:shared" not in {
        a["name"] for a in api.get("/analyses", headers=auth(tenant="lab-b")).json()["items"]
    }


def test_a_regression_model_of_the_lambda_runtime_shows_its_outputs_and_is_dispatched_to_lambda(
    api: TestClient, cloud: LocalCloud
):
    data, spec = make_brain_age_model(1.0, 0.0, runtime="lambda")
    body = {"name": "brain-age", "spec": json.loads(spec.model_dump_json()), "size": len(data)}
    too_large = api.post("/models", json={**body, "size": MAX_LAMBDA_MODEL_BYTES + 1}, headers=auth())
    assert too_large.status_code == 422 and "runtime gpu" in too_large.text
    created = api.post("/models", json=body, headers=auth())
    assert created.status_code == 201, created.text
    boto3.client("s3").put_object(Bucket=cloud.bucket, Key=created.json()["upload"]["key"], Body=data)
    model = api.post("/models/brain-age/complete", headers=auth()).json()
    assert (model["kind"], model["runtime"], model["status"]) == ("regression", "lambda", "READY")
    assert "patch_size" not in model["spec"] and model["spec"]["outputs"][0]["compare_to"] == "age"
    items = {a["name"]: a for a in api.get("/analyses", headers=auth(Role.VIEWER)).json()["items"]}
    entry = items["model:brain-age"]
    assert (entry["kind"], entry["runtime"], entry["outputs"]) == (
        "regression",
        "lambda",
        [
            {"name": "brain_age_years", "unit": "years", "compare_to": "age", "gap": "brain_age_gap"},
            {"name": "mean_intensity", "unit": "a.u."},
        ],
    )

    study = api.post(
        "/studies",
        json={"files": [{"name": "scan.nii.gz", "size": 100}], "analyses": ["model:brain-age"], "age": 61},
        headers=auth(Role.UPLOADER),
    )
    assert study.status_code == 201, study.text
    study_id = study.json()["study_id"]
    for status in (StudyStatus.VALIDATING, StudyStatus.VALIDATED, StudyStatus.QUEUED):
        tracking.transition(STORE, study_id, 1, status)
    item = WorkItem(
        study_id=study_id,
        attempt=1,
        tenant="lab-a",
        input_key=f"uploads/lab-a/{study_id}/scan.nii.gz",
        analyses=["model:brain-age"],
    )
    assert dispatch(item, STORE, StepFunctionsExecutions()) == "started"
    sfn = boto3.client("stepfunctions")
    (execution,) = sfn.list_executions(stateMachineArn=cloud.state_machine_arn)["executions"]
    started = ExecutionInput.model_validate_json(
        sfn.describe_execution(executionArn=execution["executionArn"])["input"]
    )
    (request,) = started.analyses
    assert (request.runtime, request.model_owner) == ("lambda", "lab-a")
    assert started.subject is not None and started.subject["age"] == 61
