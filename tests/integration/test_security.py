"""The API's door, attacked: every route x every role x another tenant's ids, Cognito's claims,
forged cursors. The app runs as the API function against the local cloud, as in test_api.py.
Malformed tokens, impossible study ids and internal webhook URLs, refused whatever the state, are
test_security_refusals.py's (one cloud for all of them).

The route walk reads the OpenAPI document, so a route added later is walked too: it must declare
who may call it (`x-voxelpipe-action`, api.dependencies.requires) and answer as it documents.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import boto3
import jwt
import pytest
from fastapi.testclient import TestClient

from infra.cli.main import main as cli
from infra.local.cloud import LocalCloud
from infra.local.serve import acting_as
from tests.fixtures.events import load_event
from tests.fixtures.models import make_threshold_model
from tests.fixtures.reference_data import LABELS, label_map, tiny_map
from voxelpipe.api.app import create_app
from voxelpipe.api.auth import (
    PERMISSIONS,
    SCOPE_OF,
    Action,
    InvalidClaims,
    Role,
    mint_dev_access_token,
    mint_dev_token,
)
from voxelpipe.api.dependencies import ACTION_EXTENSION, PUBLIC
from voxelpipe.api.routes.viewer import VIEWER_GRANT
from voxelpipe.function_specs import API
from voxelpipe.inference import registry
from voxelpipe.machine_clients import Scope
from voxelpipe.routing import DEFAULT_RULE_SET
from voxelpipe.status import StudyStatus
from voxelpipe.wiring import EnvVar

CALLER = "lab-a"
FOREIGN = "lab-b"
FOREIGN_MODEL = "foreign-model"
METHODS = ("get", "post", "put", "patch", "delete")


@pytest.fixture
def api(cloud: LocalCloud, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    monkeypatch.setenv(EnvVar.AUTH_MODE, "dev")
    # Requests act as the API function: its role's policies hold them (infra/local/iam.py).
    with TestClient(acting_as(cloud, API.name, create_app())) as client:
        yield client


def auth(role: Role, tenant: str = CALLER) -> dict[str, str]:
    return {"authorization": f"Bearer {mint_dev_token(tenant, role)}"}


@pytest.fixture
def foreign(api: TestClient, cloud: LocalCloud) -> dict[str, str]:
    """Another tenant's study, model and atlas (READY ones, registered by its admin through the API),
    rule set and bulk reprocess batch."""
    created = api.post(
        "/studies",
        json={"files": [{"name": "scan.nii.gz", "size": 1000}], "webhook_url": None},
        headers=auth(Role.UPLOADER, FOREIGN),
    )
    assert created.status_code == 201, created.text
    data, spec = make_threshold_model(100.0, patch_size=(8, 8, 8))
    body = {"name": FOREIGN_MODEL, "spec": json.loads(spec.model_dump_json()), "size": len(data)}
    model = api.post("/models", json=body, headers=auth(Role.ADMIN, FOREIGN))
    assert model.status_code == 201, model.text
    boto3.client("s3").put_object(Bucket=cloud.bucket, Key=model.json()["upload"]["key"], Body=data)
    assert api.post(f"/models/{FOREIGN_MODEL}/complete", headers=auth(Role.ADMIN, FOREIGN)).status_code == 200
    atlas = {"label_map": label_map(tiny_map()), "labels": LABELS.encode()}
    body = {
        "name": FOREIGN_MODEL,
        "licence": "test",
        "citation": "test",
        "commercial_use": False,
        "space": "MNI152NLin2009aSym",
        "files": [{"role": role, "size": len(data)} for role, data in atlas.items()],
    }
    registered = api.post("/references/atlas", json=body, headers=auth(Role.ADMIN, FOREIGN))
    assert registered.status_code == 201, registered.text
    for role, data in atlas.items():
        key = registered.json()["uploads"][role]["key"]
        boto3.client("s3").put_object(Bucket=cloud.bucket, Key=key, Body=data)
    completed = api.post(f"/references/atlas/{FOREIGN_MODEL}/complete", headers=auth(Role.ADMIN, FOREIGN))
    assert completed.status_code == 200, completed.text
    rules = api.post("/rules", json=DEFAULT_RULE_SET.as_json(), headers=auth(Role.ADMIN, FOREIGN))
    assert rules.status_code == 201 and rules.json()["version"] == 1, rules.text
    batch = api.post("/reprocess-batches", json={}, headers=auth(Role.ADMIN, FOREIGN))
    assert batch.status_code == 202, batch.text
    client = {"name": FOREIGN_MODEL, "scopes": ["studies.read"]}
    assert api.post("/clients", json=client, headers=auth(Role.ADMIN, FOREIGN)).status_code == 201
    return {
        "study_id": created.json()["study_id"],
        "name": FOREIGN_MODEL,
        "version": "1",
        "batch_id": batch.json()["batch_id"],
    }


def _operations() -> list[tuple[str, str, dict[str, Any]]]:
    """Every operation of the app's OpenAPI document: what the walk covers."""
    document = create_app().openapi()
    return [
        (method.upper(), path, operation)
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if method in METHODS
    ]


# What a path parameter is filled with, and the 404 code another tenant's resource answers.
PATH_PARAMETERS = {
    "study_id": "study_not_found",
    "name": "model_not_found",
    "version": "rule_set_not_found",
    "batch_id": "batch_not_found",
}
# Path parameters that name no tenant's resource (a kind of reference data): what fills them.
# DICOMweb's UIDs: no tenant holds these (test_api_dicomweb.py holds another tenant's to a 404).
FIXED_PATH_PARAMETERS = {
    "kind": "atlas",
    "subject_ref": "sub-foreign",
    "study_uid": "2.25.1",
    "series_uid": "2.25.2",
    "sop_uid": "2.25.3",
    "destination": "foreign-pacs",  # a delivery's destination: its (foreign) study answers first
    "tenant": FOREIGN,  # /quotas/{tenant}: operators' only, deployment-wide by design
}


def _not_found_code(path: str, parameter: str) -> str:
    """The 404 code of another tenant's resource named by `parameter` of `path`."""
    if path.startswith("/references/"):
        return "reference_not_found"
    if path.startswith("/destinations/"):
        return "destination_not_found"  # destinations are each tenant's own, by name
    if path.startswith("/clients/"):
        return "client_not_found"  # machine clients are each tenant's own, by name
    return PATH_PARAMETERS[parameter]


def _call(api: TestClient, method: str, path: str, operation: dict[str, Any], ids: dict[str, str], headers):
    url = path
    for parameter in PATH_PARAMETERS:
        url = url.replace("{" + parameter + "}", ids[parameter])
    for parameter, value in FIXED_PATH_PARAMETERS.items():
        url = url.replace("{" + parameter + "}", value)
    assert "{" not in url, f"{method} {path}: a path parameter the walk cannot fill: name its foreign id"
    body = operation.get("requestBody")
    json_body = {} if body is not None and body.get("required") else None
    return api.request(method, url, headers=headers, json=json_body)


def test_every_route_answers_each_role_as_documented_and_never_reaches_another_tenant(
    api: TestClient, foreign: dict[str, str]
):
    operations = _operations()
    assert {(m, p) for m, p, _ in operations} >= {("GET", "/studies"), ("DELETE", "/models/{name}")}
    every_scope = {"name": "walker", "scopes": [scope.value for scope in Scope]}
    machine_client = api.post("/clients", json=every_scope, headers=auth(Role.ADMIN)).json()["client"][
        "client_id"
    ]
    seen = 0
    for method, path, operation in operations:
        declared = operation.get(ACTION_EXTENSION)
        assert declared is not None, f"{method} {path} does not declare who may call it (requires())"
        parameters = [p for p in PATH_PARAMETERS if "{" + p + "}" in path]
        for role in [None, *Role]:
            headers = {} if role is None else auth(role)
            response = _call(api, method, path, operation, foreign, headers)
            seen += 1
            where = f"{method} {path} as {role or 'anonymous'}: {response.status_code} {response.text[:300]}"
            assert response.status_code < 500, where
            assert str(response.status_code) in operation["responses"], f"undocumented answer: {where}"
            if response.status_code >= 400:
                assert response.headers["content-type"] == "application/problem+json", where
            problem = response.json() if response.status_code >= 400 else {}
            if declared == PUBLIC:
                assert response.status_code == 200, where
                continue
            if declared == VIEWER_GRANT:  # a viewer link's grant, which no user's token is
                assert (response.status_code, problem["code"]) in {
                    (401, "unauthenticated"),
                    (401, "invalid_grant"),
                }, where
                continue
            if role is None:
                assert (response.status_code, problem["code"]) == (401, "unauthenticated"), where
            elif Action(declared) not in PERMISSIONS[role]:
                assert (response.status_code, problem["code"]) == (403, "forbidden"), where
            elif parameters:
                # Another tenant's study or model is a 404, as one that does not exist (a body that
                # fails validation is refused before any lookup: it says nothing either).
                codes = {_not_found_code(path, p) for p in parameters}
                assert response.status_code in (404, 422), where
                if response.status_code == 404:
                    assert problem["code"] in codes, where
            elif path == "/audit":
                # The caller's tenant's own audit echoes the calls this walk made as that tenant,
                # which named the other tenant's ids (each answered 404); that the audit never
                # shows another tenant's rows is test_access_audit.py's.
                assert response.status_code == 200, where
            else:
                assert response.status_code != 500, where
                assert foreign["study_id"] not in response.text, where
                assert foreign["name"] not in response.text, where
        if declared not in (PUBLIC, VIEWER_GRANT):
            # A machine client with every scope but the route's is refused, naming what it lacks.
            scope = SCOPE_OF[Action(declared)]
            others = frozenset(Scope) - {scope}
            token = mint_dev_access_token(machine_client, frozenset(others))
            headers = {"authorization": f"Bearer {token}"}
            response = _call(api, method, f"/machine{path}", operation, foreign, headers)
            where = f"{method} /machine{path} without {scope}: {response.status_code} {response.text[:300]}"
            assert response.status_code == 403, where
            assert (scope.full_name if scope else "people only") in response.json()["detail"], where
    assert seen == len(operations) * (len(Role) + 1)
    # Nothing of the other tenant's changed.
    study = api.get(f"/studies/{foreign['study_id']}", headers=auth(Role.VIEWER, FOREIGN)).json()
    assert study["status"] == StudyStatus.AWAITING_UPLOAD
    models = api.get("/models", headers=auth(Role.VIEWER, FOREIGN)).json()["items"]
    assert [(m["name"], m["status"]) for m in models] == [(FOREIGN_MODEL, "READY")]
    atlases = api.get("/references/atlas", headers=auth(Role.VIEWER, FOREIGN)).json()["items"]
    assert [(a["name"], a["version"], a["status"]) for a in atlases] == [(FOREIGN_MODEL, 1, "READY")]
    rule_sets = api.get("/rules", headers=auth(Role.ADMIN, FOREIGN)).json()
    assert rule_sets["active_version"] == 1 and not rule_sets["items"][0]["deleted"]
    clients = api.get("/clients", headers=auth(Role.ADMIN, FOREIGN)).json()["items"]
    assert [c["name"] for c in clients] == [FOREIGN_MODEL]


def test_the_routes_api_gateway_lets_through_without_a_token_are_the_apps_public_ones():
    from infra.api import PUBLIC_PATHS

    public = {
        path.strip("/") for _, path, operation in _operations() if operation[ACTION_EXTENSION] == PUBLIC
    }
    # API Gateway's unauthenticated methods: the app's public routes, and its own documentation.
    assert set(PUBLIC_PATHS) == public | {"docs", "openapi.json"}


def test_cognito_claims_are_checked_as_development_tokens_are(cloud: LocalCloud):
    def call(tenant: Any, groups: Any) -> tuple[int, dict[str, Any]]:
        event = load_event("api_get_study.json", TENANT="lab-a", ROLE="admin", STUDY_ID="0" * 32)
        event["path"] = event["requestContext"]["path"] = "/models"
        claims = event["requestContext"]["authorizer"]["claims"]
        claims["custom:tenant"], claims["cognito:groups"] = tenant, groups
        response, error = cloud.invoke("api", event)
        assert error is None, response
        return response["statusCode"], json.loads(response["body"])

    for groups in ("[admin, viewer]", "viewer,admin", "[uploader]", "admin"):
        assert call("lab-a", groups)[0] == 200, groups
    for tenant, groups, status, named in [
        ("lab-a", 1, 401, "cognito:groups"),
        ("lab-a", "[admin viewer]", 401, "cognito:groups"),
        ("lab-a", "staff", 403, "cognito:groups"),
        ("Acme", "admin", 403, "custom:tenant"),
        ("a/0123456789abcdef0123456789abcdef", "admin", 403, "custom:tenant"),
        (["lab-a"], "admin", 401, "custom:tenant"),
    ]:
        answered, problem = call(tenant, groups)
        assert answered == status and named in problem["detail"], (tenant, groups, problem)


def test_no_token_is_minted_for_a_tenant_the_api_would_refuse(capsys: pytest.CaptureFixture[str]):
    for tenant in ("Acme", "a/b", "../a", "a" * 300, ""):
        with pytest.raises(InvalidClaims, match="custom:tenant"):
            mint_dev_token(tenant, Role.ADMIN)
        assert cli(["token", "--tenant", tenant, "--role", "admin"]) == 2
        assert "custom:tenant" in capsys.readouterr().err
    assert cli(["token", "--tenant", "lab-a", "--role", "operator"]) == 0
    minted = capsys.readouterr().out.strip()
    assert jwt.decode(minted, options={"verify_signature": False})["cognito:groups"] == ["operator"]


def _forged_cursors(issued: str) -> list[str]:
    payload, _, mac = issued.partition(".")
    decoded = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    edited = {**decoded, "study_id": {"S": "f" * 32}}

    def b64(data: Any) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).decode()

    return [
        "not a cursor",
        "!!!!",
        ".",
        "é",
        b64({"a": 1}),  # JSON of another shape (the unsigned form this API issued before)
        b64([1, 2]),
        b64("[" * 5000),
        base64.urlsafe_b64encode(b"[" * 700).decode(),  # deep nesting, within the size limit
        base64.urlsafe_b64encode(b"[" * 30_000).decode(),  # deeper than Python's JSON parser goes
        b64(decoded),  # the right shape, unsigned
        b64(edited) + "." + mac,  # edited, the old signature
        payload + "." + mac[:-2] + ("AA" if not mac.endswith("AA") else "BB"),  # a tampered signature
        issued + "x" * 2000,  # too long
        b64({"study_id": {"S": 1}, "tenant": {"S": CALLER}, "created_at": {"S": "x"}}),
        b64({"study_id": {"N": "1"}, "tenant": {"S": CALLER}, "created_at": {"S": "x"}}),
    ]


def test_a_cursor_that_is_not_ours_is_400_invalid_cursor(api: TestClient):
    for _ in range(3):
        created = api.post(
            "/studies", json={"files": [{"name": "a.nii", "size": 10}]}, headers=auth(Role.UPLOADER)
        )
        assert created.status_code == 201
    page = api.get("/studies", params={"limit": 1}, headers=auth(Role.VIEWER)).json()
    issued = page["next_cursor"]
    assert (
        issued
        and api.get("/studies", params={"limit": 1, "cursor": issued}, headers=auth(Role.VIEWER)).status_code
        == 200
    )
    for cursor in _forged_cursors(issued):
        response = api.get("/studies", params={"cursor": cursor}, headers=auth(Role.VIEWER))
        assert response.status_code == 400, (cursor[:60], response.text)
        assert response.json()["code"] == "invalid_cursor"
    # A cursor issued to one tenant is no key into another's studies.
    other = api.get("/studies", params={"cursor": issued}, headers=auth(Role.VIEWER, FOREIGN))
    assert other.status_code == 400 and other.json()["code"] == "invalid_cursor"


def test_development_keeps_accepting_local_http_receivers(api: TestClient):
    for url in ("http://127.0.0.1:9/hook", "http://localhost:9/hook"):
        body = {"files": [{"name": "a.nii", "size": 9}], "webhook_url": url}
        response = api.post("/studies", json=body, headers=auth(Role.UPLOADER))
        assert response.status_code == 201, response.text


def test_models_are_the_tenants_own(api: TestClient, foreign: dict[str, str]):
    # Another tenant's admin neither sees, runs, completes nor retires them: 404, as none.
    admin = auth(Role.ADMIN)
    assert FOREIGN_MODEL not in api.get("/models", headers=admin).text
    assert f"model:{FOREIGN_MODEL}" not in api.get("/analyses", headers=admin).text
    study = {"files": [{"name": "a.nii", "size": 9}], "analyses": [f"model:{FOREIGN_MODEL}"]}
    refused = api.post("/studies", json=study, headers=auth(Role.UPLOADER))
    assert refused.status_code == 422 and refused.json()["errors"][0]["field"] == "analyses"
    assert api.delete(f"/models/{FOREIGN_MODEL}", headers=admin).json()["code"] == "model_not_found"
    assert api.post(f"/models/{FOREIGN_MODEL}/complete", headers=admin).json()["code"] == "model_not_found"
    assert registry.get_model(FOREIGN, FOREIGN_MODEL).status == "READY"
