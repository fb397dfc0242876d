"""The access audit and the quotas (docs/security.md), against the local cloud.

- The route walk: every route of the OpenAPI document that reads or changes tenant data writes
  exactly one access audit row per call, naming the caller, the route's declared action, the path,
  the status answered, the source and the request id. The walk reads the document, so a route added
  later is walked too (and the app refuses to start if it declares no access, api/audit.py).
- An audit row cannot be updated or deleted as any function's role (the local cloud's IAM).
- GET /audit: admins only, the caller's tenant only, filters, a signed cursor.
- Quotas: 429 naming the limit (and Retry-After) for a tenant over its daily studies, its rate, its
  bytes; other tenants unaffected.

One local cloud for the module; each test uses tenants of its own.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import boto3
import pytest
from botocore.exceptions import ClientError
from fastapi.testclient import TestClient

from infra.cli import audit as audit_cli
from infra.cli.audit import run_audit
from infra.cli.client import Client
from infra.cli.main import _parser
from infra.local.cloud import LocalCloud
from infra.local.serve import acting_as
from tests.fixtures.cloud import checked_cloud
from voxelpipe.api.app import create_app
from voxelpipe.api.audit import AUDIT_EXTENSION, REQUEST_ID_HEADER, VIEWER_GRANT_ROLE
from voxelpipe.api.auth import Role, mint_dev_token
from voxelpipe.api.dependencies import ACTION_EXTENSION, PUBLIC
from voxelpipe.api.routes.viewer import VIEWER_GRANT
from voxelpipe.function_specs import API, FUNCTIONS
from voxelpipe.records import AccessRecord
from voxelpipe.routing import DEFAULT_RULE_SET
from voxelpipe.wiring import EnvVar

METHODS = ("get", "post", "put", "patch", "delete")


@pytest.fixture(scope="module")
def cloud(template: dict[str, Any]) -> Iterator[LocalCloud]:
    with checked_cloud(template) as local:
        yield local


@pytest.fixture(scope="module")
def api(cloud: LocalCloud) -> Iterator[TestClient]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(EnvVar.AUTH_MODE, "dev")
        with TestClient(acting_as(cloud, API.name, create_app())) as client:
            yield client


def auth(tenant: str, role: Role = Role.ADMIN, subject: str | None = None) -> dict[str, str]:
    return {"authorization": f"Bearer {mint_dev_token(tenant, role, subject=subject)}"}


def rows(tenant: str) -> list[AccessRecord]:
    return list(AccessRecord.query(tenant, consistent_read=True))


def create_study(api: TestClient, tenant: str, size: int = 1000, subject_ref: str | None = None) -> Any:
    body = {"files": [{"name": "scan.nii.gz", "size": size}], "subject_ref": subject_ref}
    return api.post("/studies", json=body, headers=auth(tenant, Role.UPLOADER))


# -- the route walk ------------------------------------------------------------------------------

WALKER = "walk-lab"
SUBJECT = "sub-walk"


def _operations() -> list[tuple[str, str, dict[str, Any]]]:
    document = create_app().openapi()
    found = [
        (method.upper(), path, operation)
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if method in METHODS
    ]
    # Deletions last, so that every other call finds the fixture tenant's data in place.
    return sorted(found, key=lambda op: op[0] == "DELETE")


def _url(path: str, ids: dict[str, str]) -> str:
    for name, value in ids.items():
        path = path.replace("{" + name + "}", value)
    assert "{" not in path, f"{path}: a path parameter the walk cannot fill: give it a fixture value"
    return path


def test_every_call_on_tenant_data_writes_exactly_one_audit_row(api: TestClient):
    created = create_study(api, WALKER, subject_ref=SUBJECT)
    assert created.status_code == 201, created.text
    study_id = created.json()["study_id"]
    assert api.post("/rules", json=DEFAULT_RULE_SET.as_json(), headers=auth(WALKER)).status_code == 201
    link = api.post(f"/studies/{study_id}/viewer-link", headers=auth(WALKER)).json()
    grant = urlsplit(link["url"]).fragment.removeprefix("grant=")
    subject_link = api.post(f"/subjects/{SUBJECT}/viewer-link", headers=auth(WALKER)).json()
    subject_grant = urlsplit(subject_link["url"]).fragment.removeprefix("grant=")
    # Valid ids of the fixture tenant where it has them; names it has none of answer 404 (still a call).
    ids = {
        "study_id": study_id,
        "subject_ref": SUBJECT,
        "tenant": WALKER,
        "version": "1",
        "kind": "atlas",
        "name": "walk-model",
        "destination": "walk-pacs",
        "study_uid": "2.25.1",
        "series_uid": "2.25.2",
        "sop_uid": "2.25.3",
        "batch_id": "0" * 32,  # no such batch: a 404, still one row
    }
    walked = 0
    for method, path, operation in _operations():
        declared = operation.get(ACTION_EXTENSION)
        assert declared is not None, f"{method} {path} declares no access"
        if declared == PUBLIC:
            continue
        action = operation.get(AUDIT_EXTENSION)
        assert action, f"{method} {path} names no audit action"
        if declared == VIEWER_GRANT:
            token = subject_grant if "{subject_ref}" in path else grant
            headers, role, actor = {"authorization": f"Bearer {token}"}, VIEWER_GRANT_ROLE, "dev-admin"
        else:
            headers, role, actor = auth(WALKER, Role.OPERATOR, "walker"), Role.OPERATOR.value, "walker"
        body = operation.get("requestBody")
        before = {row.event_key for row in rows(WALKER)}
        response = api.request(
            method,
            _url(path, ids),
            headers={**headers, "user-agent": "audit-walk/1"},
            json={} if body is not None and body.get("required") else None,
        )
        where = f"{method} {path}: {response.status_code} {response.text[:200]}"
        assert response.status_code < 500, where
        new = [row for row in rows(WALKER) if row.event_key not in before]
        assert len(new) == 1, f"{where}: {len(new)} audit rows"
        (row,) = new
        assert (row.actor, row.role, row.action, row.method, row.route) == (actor, role, action, method, path)
        assert (row.status, row.user_agent, row.path) == (
            response.status_code,
            "audit-walk/1",
            _url(path, ids),
        )
        assert row.request_id == response.headers[REQUEST_ID_HEADER] and row.source_ip
        assert row.study_id == (study_id if "{study_id}" in path else None), where
        walked += 1
    assert walked >= 40
    # A call without a token names no tenant: no row (API Gateway's access logs keep it).
    before = len(rows(WALKER))
    assert api.get(f"/studies/{study_id}").status_code == 401
    assert len(rows(WALKER)) == before
    # An earlier attempt's results (?attempt=): one row, the attempt asked for noted (a 404 here: none).
    fresh = create_study(api, WALKER).json()["study_id"]  # the walk deleted the first
    earlier = api.get(f"/studies/{fresh}/results?attempt=2", headers=auth(WALKER, Role.VIEWER))
    assert earlier.status_code == 404 and earlier.json()["code"] == "attempt_not_found"
    request_id = earlier.headers[REQUEST_ID_HEADER]
    (row,) = [r for r in rows(WALKER) if r.request_id == request_id]
    assert (row.action, row.status, row.path) == ("study.results", 404, f"/studies/{fresh}/results")
    # What routes note: the study a POST created, the links a results call would issue.
    created_row = next(row for row in rows(WALKER) if row.action == "study.create")
    assert created_row.study_id == study_id and created_row.resource["study_id"] == study_id


# -- append-only ---------------------------------------------------------------------------------


def test_no_function_role_may_update_or_delete_an_audit_row(api: TestClient, cloud: LocalCloud):
    assert api.get("/studies", headers=auth("iam-lab")).status_code == 200  # an access row to attack
    (row,) = rows("iam-lab")
    dynamodb = boto3.client("dynamodb")
    tables = {
        "access": (
            cloud.env(EnvVar.ACCESS_AUDIT_TABLE),
            {"tenant": {"S": "iam-lab"}, "event_key": {"S": row.event_key}},
        ),
        "study": (cloud.env(EnvVar.AUDIT_TABLE), {"study_id": {"S": "any"}, "event_key": {"S": "any"}}),
    }
    attempts = 0
    for spec in FUNCTIONS:
        for table, key in tables.values():
            calls: list[tuple[str, dict[str, Any]]] = [
                (
                    "update_item",
                    {
                        "TableName": table,
                        "Key": key,
                        "UpdateExpression": "SET actor = :a",
                        "ExpressionAttributeValues": {":a": {"S": "someone-else"}},
                    },
                ),
                ("delete_item", {"TableName": table, "Key": key}),
                ("batch_write_item", {"RequestItems": {table: [{"DeleteRequest": {"Key": key}}]}}),
            ]
            for operation, parameters in calls:
                with cloud.acting_as(spec.name), pytest.raises(ClientError) as refused:
                    getattr(dynamodb, operation)(**parameters)
                error = refused.value.response["Error"]["Code"]
                assert error == "AccessDeniedException", f"{spec.name} {operation} on {table}: {error}"
                attempts += 1
    assert attempts == len(FUNCTIONS) * 2 * 3
    assert len(cloud.iam.denials) == attempts  # each refused by the local IAM, none let through
    cloud.iam.denials.clear()
    # The row is as written; and the API's role may still append (the grant is not a blanket deny).
    (after,) = rows("iam-lab")
    assert after.actor == row.actor == "dev-admin"
    with cloud.acting_as(API.name):
        dynamodb.put_item(
            TableName=tables["access"][0],
            Item={**tables["access"][1], "event_key": {"S": row.event_key + "-next"}},
            ConditionExpression="attribute_not_exists(event_key)",
        )
    assert cloud.iam.denials == []


# -- GET /audit ----------------------------------------------------------------------------------


def test_the_audit_is_an_admin_s_filtered_paged_and_the_tenant_s_own(api: TestClient):
    tenant, other = "audit-lab", "audit-other"
    first = create_study(api, tenant).json()["study_id"]
    second = create_study(api, tenant).json()["study_id"]
    for study_id in (first, first, second):
        assert api.get(f"/studies/{study_id}", headers=auth(tenant, Role.VIEWER, "reader")).status_code == 200
    create_study(api, other)
    started = datetime.now(UTC)
    assert (
        api.get(f"/studies/{first}/results", headers=auth(tenant, Role.VIEWER, "reader")).status_code == 409
    )

    def audit(role: Role = Role.ADMIN, who: str = tenant, **params: Any) -> Any:
        return api.get("/audit", params=params, headers=auth(who, role, "auditor"))

    for role in (Role.VIEWER, Role.UPLOADER):
        refused = audit(role)
        assert refused.status_code == 403 and refused.json()["code"] == "forbidden"
    everything = audit(limit=500).json()
    assert everything["next_cursor"] is None
    assert all(row["study_id"] in (None, first, second) for row in everything["items"])
    times = [row["at"] for row in everything["items"]]
    assert times == sorted(times, reverse=True)  # newest first
    reads = audit(study=first, action="study.read").json()["items"]
    assert [(row["actor"], row["path"]) for row in reads] == [("reader", f"/studies/{first}")] * 2
    by_reader = audit(actor="reader").json()["items"]
    assert {row["action"] for row in by_reader} == {"study.read", "study.results"}
    assert {row["role"] for row in by_reader} == {"viewer"}
    results = audit(action="study.results").json()["items"]
    assert [(row["status"], row["study_id"]) for row in results] == [(409, first)]
    recent = audit(**{"from": started.isoformat()}).json()["items"]
    assert [row["action"] for row in recent if row["actor"] == "reader"] == ["study.results"]
    earlier = audit(to=(started - timedelta(microseconds=1)).isoformat()).json()["items"]
    assert "study.results" not in {row["action"] for row in earlier}
    # Pages of 2 cover every row once; the cursor is signed and the tenant's.
    paged, cursor = [], None
    while True:
        page = audit(limit=2, **({"cursor": cursor} if cursor else {})).json()
        paged += [row["request_id"] for row in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
        assert len(page["items"]) == 2
    everything_now = audit(limit=500).json()["items"]
    assert set(paged) <= {row["request_id"] for row in everything_now} and len(set(paged)) == len(paged)
    cursor = audit(limit=1).json()["next_cursor"]
    assert audit(who=other, cursor=cursor).json()["code"] == "invalid_cursor"
    assert audit(cursor=cursor[:-3] + "AAA").status_code == 400
    # Another tenant's admin sees only its own.
    others = audit(who=other).json()["items"]
    assert others and all(row["study_id"] not in (first, second) for row in others)
    assert audit(**{"from": "2026-01-01T00:00:00"}).status_code == 422  # no time zone


# -- quotas --------------------------------------------------------------------------------------


def _set_quotas(api: TestClient, tenant: str, **limits: int) -> dict[str, Any]:
    response = api.put(f"/quotas/{tenant}", json=limits, headers=auth("ops", Role.OPERATOR))
    assert response.status_code == 200, response.text
    return dict(response.json())


def test_a_tenant_over_its_daily_studies_gets_a_429_naming_the_limit_others_do_not(api: TestClient):
    tenant, other = "quota-lab", "quota-other"
    refused = api.put(f"/quotas/{tenant}", json={"studies_per_day": 2}, headers=auth(tenant, Role.ADMIN))
    assert refused.status_code == 403  # a tenant's admin cannot raise its own limits
    assert _set_quotas(api, tenant, studies_per_day=2)["limits"]["studies_per_day"] == 2
    assert [create_study(api, tenant).status_code for _ in range(2)] == [201, 201]
    asked = datetime.now(UTC)
    over = create_study(api, tenant)
    assert over.status_code == 429 and over.headers["content-type"] == "application/problem+json"
    problem = over.json()
    assert (problem["code"], problem["limit"], problem["limit_value"], problem["used"]) == (
        "quota_exceeded",
        "studies_per_day",
        2,
        2,
    )
    resets = datetime.fromisoformat(problem["resets_at"])  # the next UTC midnight
    assert resets.time() == time(0) and timedelta(0) < resets - asked <= timedelta(days=1)
    assert 0 < int(over.headers["retry-after"]) <= 86400
    assert create_study(api, other).status_code == 201  # another tenant is unaffected
    usage = api.get("/usage", headers=auth(tenant)).json()["quotas"]
    assert usage["studies_per_day"] == {"limit": 2, "used": 2, "resets_at": problem["resets_at"]}
    assert api.get("/usage", headers=auth(tenant, Role.UPLOADER)).status_code == 403
    # Declared bytes: a study that does not fit is refused; deleting one frees its bytes.
    _set_quotas(api, tenant, studies_per_day=10, stored_bytes=3500)
    third = create_study(api, tenant, size=1500)
    assert third.status_code == 201
    full = create_study(api, tenant, size=1000)
    assert (full.status_code, full.json()["limit"], full.json()["used"]) == (429, "stored_bytes", 3500)
    assert "retry-after" not in full.headers  # only deleting studies frees bytes
    assert api.delete(f"/studies/{third.json()['study_id']}", headers=auth(tenant)).status_code == 200
    assert create_study(api, tenant, size=1000).status_code == 201
    _set_quotas(api, tenant)  # back to the defaults
    assert create_study(api, tenant).status_code == 201


def test_requests_past_the_rate_get_a_429_with_retry_after(api: TestClient):
    tenant = "rate-lab"
    _set_quotas(api, tenant, requests_per_minute=3)
    answers = [api.get("/studies", headers=auth(tenant)) for _ in range(8)]
    limited = [answer for answer in answers if answer.status_code == 429]
    # 3 a minute: at most 3 calls of the minute pass (6 if the minute turned during the loop).
    assert limited and sum(answer.status_code == 200 for answer in answers) <= 6
    problem = limited[0].json()
    assert (problem["limit"], problem["limit_value"]) == ("requests_per_minute", 3)
    assert 0 < int(limited[0].headers["retry-after"]) <= 60
    assert api.get("/studies", headers=auth("rate-other")).status_code == 200  # others unaffected
    # A limited call is audited too (it was refused before it read anything).
    assert any(row.status == 429 for row in rows(tenant))


# -- the CLI's export ----------------------------------------------------------------------------


def test_voxelpipe_audit_exports_every_page_as_csv_or_json(
    api: TestClient, cloud: LocalCloud, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    tenant = "export-lab"
    study_id = create_study(api, tenant).json()["study_id"]
    for _ in range(3):
        assert api.get(f"/studies/{study_id}", headers=auth(tenant, Role.VIEWER, "reader")).status_code == 200
    monkeypatch.setattr(audit_cli, "PAGE_SIZE", 2)  # several pages
    with TestClient(acting_as(cloud, API.name, create_app())) as http:
        client = Client("http://testserver", None)
        client.http = http
        http.headers.update(auth(tenant, Role.ADMIN, "exporter"))
        output = tmp_path / "audit.csv"
        args = _parser().parse_args(["audit", "--study", study_id, "--output", str(output)])
        assert run_audit(args, client) == 0
        exported = list(csv.DictReader(output.open()))
        assert [row["action"] for row in exported] == ["study.read"] * 3 + ["study.create"]
        assert {row["study_id"] for row in exported} == {study_id}
        assert list(exported[0]) == list(audit_cli.COLUMNS)
        args = _parser().parse_args(
            ["audit", "--actor", "reader", "--format", "json", "--output", str(output)]
        )
        assert run_audit(args, client) == 0
        assert [row["path"] for row in json.loads(output.read_text())] == [f"/studies/{study_id}"] * 3
