"""Machine clients through the API (development issuer, against moto): an admin creates one, its
access token is authorised by scope under /machine, an expired or deleted one is refused; and the
Cognito issuer against moto's cognito-idp."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import boto3
import pytest
from fastapi.testclient import TestClient
from moto import mock_aws

from infra.local.cloud import LocalCloud
from infra.local.serve import acting_as
from tests.fixtures.events import load_event
from voxelpipe.adapters.cognito_clients import CognitoClientIssuer
from voxelpipe.adapters.machine_clients import DynamoMachineClients
from voxelpipe.api.app import create_app
from voxelpipe.api.audit import MACHINE_ROLE, REQUEST_ID_HEADER
from voxelpipe.api.auth import Role, mint_dev_access_token, mint_dev_token
from voxelpipe.function_specs import API
from voxelpipe.machine_clients import MachineClient, Scope
from voxelpipe.records import AccessRecord
from voxelpipe.wiring import EnvVar

STUDY = {"files": [{"name": "scan.nii.gz", "size": 1000}]}


@pytest.fixture
def api(cloud: LocalCloud, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    monkeypatch.setenv(EnvVar.AUTH_MODE, "dev")
    with TestClient(acting_as(cloud, API.name, create_app())) as client:
        yield client


def person(role: Role, tenant: str = "lab-a") -> dict[str, str]:
    return {"authorization": f"Bearer {mint_dev_token(tenant, role)}"}


def machine(client_id: str, *scopes: Scope) -> dict[str, str]:
    return {"authorization": f"Bearer {mint_dev_access_token(client_id, frozenset(scopes))}"}


def test_a_reading_client_reads_its_tenant_and_may_not_create(api: TestClient):
    mine = api.post("/studies", json=STUDY, headers=person(Role.UPLOADER)).json()["study_id"]
    theirs = api.post("/studies", json=STUDY, headers=person(Role.UPLOADER, "lab-b")).json()["study_id"]
    created = api.post(
        "/clients", json={"name": "pacs-reader", "scopes": ["studies.read"]}, headers=person(Role.ADMIN)
    )
    assert created.status_code == 201, created.text
    body = created.json()
    client_id, secret = body["client"]["client_id"], body["client_secret"]
    assert body["client"]["scopes"] == ["studies.read"] and secret and body["api_url"].endswith("/machine")
    days = (datetime.fromisoformat(body["client"]["expires_at"]) - datetime.now(UTC)).days
    assert 88 <= days <= 90  # the deployment's default life
    listed = api.get("/clients", headers=person(Role.ADMIN))
    assert [c["name"] for c in listed.json()["items"]] == ["pacs-reader"] and secret not in listed.text
    # Its token reads its tenant's studies (not another's) under /machine ...
    reader = machine(client_id, Scope.STUDIES_READ)
    page = api.get("/machine/studies", headers=reader)
    assert page.status_code == 200, page.text
    assert [s["study_id"] for s in page.json()["items"]] == [mine] and theirs not in page.text
    read = api.get(f"/machine/studies/{mine}", headers=reader)
    assert read.status_code == 200
    # Its access audit row names the client (its id the actor, its name beside it), the path as called.
    (row,) = [
        r
        for r in AccessRecord.query("lab-a", consistent_read=True)
        if r.request_id == read.headers[REQUEST_ID_HEADER]
    ]
    assert (row.actor, row.role, row.action, row.study_id) == (client_id, MACHINE_ROLE, "study.read", mine)
    assert row.resource["client"] == "pacs-reader" and row.path == f"/machine/studies/{mine}"
    # ... may not create a study, even with a token claiming more than the client was given ...
    for token in (reader, machine(client_id, Scope.STUDIES_READ, Scope.STUDIES_WRITE)):
        refused = api.post("/machine/studies", json=STUDY, headers=token)
        assert refused.status_code == 403, refused.text
        assert "voxelpipe/studies.write" in refused.json()["detail"]
    # ... and is a machine's token only under /machine; a person's is refused there.
    assert api.get("/studies", headers=reader).status_code == 401
    assert api.get("/machine/studies", headers=person(Role.ADMIN)).status_code == 401
    # Another tenant's admin does not see it, nor may delete it; a name is unique in its tenant.
    assert api.get("/clients", headers=person(Role.ADMIN, "lab-b")).json()["items"] == []
    assert api.delete("/clients/pacs-reader", headers=person(Role.ADMIN, "lab-b")).status_code == 404
    again = api.post(
        "/clients", json={"name": "pacs-reader", "scopes": ["studies.read"]}, headers=person(Role.ADMIN)
    )
    assert again.status_code == 409 and again.json()["code"] == "client_exists"
    # Deleting it refuses its tokens at once.
    assert api.delete("/clients/pacs-reader", headers=person(Role.ADMIN)).status_code == 200
    gone = api.get("/machine/studies", headers=reader)
    assert gone.status_code == 401 and client_id in gone.json()["detail"]


def test_a_writing_client_creates_and_machines_never_manage_clients(api: TestClient):
    body = {"name": "router", "scopes": ["studies.write", "studies.read"], "valid_days": 7}
    created = api.post("/clients", json=body, headers=person(Role.ADMIN)).json()["client"]
    writer = machine(created["client_id"], Scope.STUDIES_WRITE, Scope.STUDIES_READ)
    study = api.post("/machine/studies", json=STUDY, headers=writer)
    assert study.status_code == 201, study.text
    assert study.json()["study_id"] in api.get("/studies", headers=person(Role.VIEWER)).text
    people_only = api.post("/machine/clients", json={"name": "x", "scopes": ["studies.read"]}, headers=writer)
    assert people_only.status_code == 403 and "people only" in people_only.json()["detail"]
    for role in (Role.UPLOADER, Role.VIEWER):  # only admins (and operators) manage clients
        assert api.get("/clients", headers=person(role)).status_code == 403
    too_long = api.post(
        "/clients",
        json={"name": "y", "scopes": ["studies.read"], "valid_days": 400},
        headers=person(Role.ADMIN),
    )
    assert too_long.status_code == 422


def test_an_expired_client_is_refused_naming_why(api: TestClient):
    past = datetime.now(UTC) - timedelta(days=1)
    DynamoMachineClients().add(
        MachineClient(
            client_id="dev-expired-client",
            tenant="lab-a",
            name="old-engine",
            scopes=frozenset({Scope.STUDIES_READ}),
            created_at=past - timedelta(days=90),
            created_by="dev-admin",
            expires_at=past,
        )
    )
    refused = api.get("/machine/studies", headers=machine("dev-expired-client", Scope.STUDIES_READ))
    assert refused.status_code == 401, refused.text
    problem = refused.json()
    assert problem["code"] == "client_expired" and "old-engine" in problem["detail"]
    assert "expired at" in problem["detail"]
    listed = api.get("/clients", headers=person(Role.ADMIN)).json()["items"]
    assert [(c["name"], c["expired"]) for c in listed] == [("old-engine", True)]


def test_the_cognito_issuer_makes_client_credentials_app_clients(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    with mock_aws():
        cognito = boto3.client("cognito-idp", region_name="eu-west-1")
        pool = cognito.create_user_pool(PoolName="voxelpipe")["UserPool"]["Id"]
        issuer = CognitoClientIssuer(pool)
        issued = issuer.create("lab-a", "pacs", frozenset({Scope.STUDIES_READ, Scope.DICOMWEB_STOW}))
        made = cognito.describe_user_pool_client(UserPoolId=pool, ClientId=issued.client_id)["UserPoolClient"]
        assert made["ClientSecret"] == issued.client_secret
        assert made["AllowedOAuthFlows"] == ["client_credentials"]
        assert sorted(made["AllowedOAuthScopes"]) == ["voxelpipe/dicomweb.stow", "voxelpipe/studies.read"]
        issuer.delete(issued.client_id)
        issuer.delete(issued.client_id)  # gone already: no error
        assert cognito.list_user_pool_clients(UserPoolId=pool)["UserPoolClients"] == []


def test_behind_api_gateway_an_access_token_s_claims_are_a_machine_s_under_machine_only(cloud: LocalCloud):
    """The API function as API Gateway invokes it (Cognito mode): the authorizer's claims of a
    client-credentials access token, on /machine/... and on the people's path."""
    DynamoMachineClients().add(
        MachineClient(
            client_id="4mach1neclient",
            tenant="lab-a",
            name="gateway",
            scopes=frozenset({Scope.STUDIES_READ}),
            created_at=datetime.now(UTC),
            created_by="admin",
            expires_at=datetime.now(UTC) + timedelta(days=1),
        )
    )

    def call(path: str, method: str = "GET") -> tuple[int, dict]:
        event = load_event("api_get_study.json", TENANT="lab-a", ROLE="admin", STUDY_ID="0" * 32)
        event["path"] = event["requestContext"]["path"] = path
        event["httpMethod"] = event["requestContext"]["httpMethod"] = method
        event["requestContext"]["authorizer"]["claims"] = {
            "sub": "4mach1neclient",
            "client_id": "4mach1neclient",
            "token_use": "access",
            "scope": "voxelpipe/studies.read voxelpipe/studies.write",
            "iss": "https://cognito-idp.us-east-1.amazonaws.com/us-east-1_example",
        }
        response, error = cloud.invoke("api", event)
        assert error is None, response
        return response["statusCode"], json.loads(response["body"])

    assert call("/machine/studies")[0] == 200
    status, problem = call("/machine/studies/" + "0" * 32, "DELETE")
    assert status == 403 and "voxelpipe/studies.delete" in problem["detail"]
    assert call("/studies")[0] == 401  # a machine's token on the people's path
