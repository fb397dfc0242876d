"""GET /subjects, GET /subjects/{ref} and POST /studies' scan_date, in process against moto."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import date

import pytest
from fastapi.testclient import TestClient

from infra.local.cloud import LocalCloud
from infra.local.serve import acting_as
from voxelpipe.adapters import secrets
from voxelpipe.api.app import create_app
from voxelpipe.api.auth import Role, mint_dev_token
from voxelpipe.function_specs import API
from voxelpipe.wiring import EnvVar


@pytest.fixture
def api(cloud: LocalCloud, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    monkeypatch.setenv(EnvVar.AUTH_MODE, "dev")
    with TestClient(acting_as(cloud, API.name, create_app())) as client:
        yield client


def auth(tenant: str, role: Role = Role.UPLOADER) -> dict[str, str]:
    return {"authorization": f"Bearer {mint_dev_token(tenant, role)}"}


def _register(api: TestClient, tenant: str, **fields: object) -> dict:
    body = {"files": [{"name": "scan.nii.gz", "size": 1000}], **fields}
    response = api.post("/studies", json=body, headers=auth(tenant))
    assert response.status_code == 201, response.text
    return response.json()


def test_a_scan_date_needs_a_subject_and_is_stored_shifted(api: TestClient):
    tenant = f"subj-{uuid.uuid4().hex[:8]}"
    refused = api.post(
        "/studies",
        json={"files": [{"name": "scan.nii.gz", "size": 1000}], "scan_date": "2024-01-05"},
        headers=auth(tenant),
    )
    assert refused.status_code == 422, refused.text
    assert [e["field"] for e in refused.json()["errors"]] == ["scan_date"]
    malformed = api.post(
        "/studies",
        json={
            "files": [{"name": "scan.nii.gz", "size": 1000}],
            "subject_ref": "S",
            "scan_date": "05/01/2024",
        },
        headers=auth(tenant),
    )
    assert malformed.status_code == 422 and malformed.json()["errors"][0]["field"] == "scan_date"

    later = _register(api, tenant, subject_ref="S-1", age=71, sex="F", scan_date="2024-01-05")
    earlier = _register(api, tenant, subject_ref="S-1", age=70, sex="F", scan_date="2022-12-01")
    views = {
        s["study_id"]: api.get(f"/studies/{s['study_id']}", headers=auth(tenant, Role.VIEWER))
        for s in (later, earlier)
    }
    shifted = {study_id: date.fromisoformat(view.json()["scan_date"]) for study_id, view in views.items()}
    interval = shifted[later["study_id"]] - shifted[earlier["study_id"]]
    assert interval == date(2024, 1, 5) - date(2022, 12, 1)  # exact, to the day
    offset = secrets.pseudonyms().date_offset_days(tenant, "S-1")
    assert shifted[later["study_id"]] == date(2024, 1, 5).fromordinal(date(2024, 1, 5).toordinal() + offset)
    for view in views.values():
        assert "2024-01-05" not in view.text and "2022-12-01" not in view.text

    detail = api.get("/subjects/S-1", headers=auth(tenant, Role.VIEWER))
    assert detail.status_code == 200, detail.text
    body = detail.json()
    assert [s["study_id"] for s in body["studies"]] == [earlier["study_id"], later["study_id"]]
    assert [s["age"] for s in body["studies"]] == [70, 71]
    assert body["study_count"] == 2 and body["sex"] == "F" and body["age"] == 71
    assert body["first_scan_date"] == shifted[earlier["study_id"]].isoformat()
    assert body["last_scan_date"] == shifted[later["study_id"]].isoformat()
    assert {s["status"] for s in body["studies"]} == {"AWAITING_UPLOAD"}
    assert "2024-01-05" not in detail.text

    # Deleting a study takes it off its subject; deleting the last takes the subject away.
    admin = auth(tenant, Role.ADMIN)
    assert api.delete(f"/studies/{earlier['study_id']}", headers=admin).status_code == 200
    after = api.get("/subjects/S-1", headers=admin).json()
    assert after["study_count"] == 1 and [s["study_id"] for s in after["studies"]] == [later["study_id"]]
    assert after["first_scan_date"] == after["last_scan_date"] == shifted[later["study_id"]].isoformat()
    assert api.delete(f"/studies/{later['study_id']}", headers=admin).status_code == 200
    gone = api.get("/subjects/S-1", headers=admin)
    assert gone.status_code == 404 and gone.json()["code"] == "subject_not_found"


def test_subjects_are_listed_by_page_within_the_tenant_only(api: TestClient):
    tenant, other = f"subj-{uuid.uuid4().hex[:8]}", f"subj-{uuid.uuid4().hex[:8]}"
    for ref in ("A", "B", "C"):
        _register(api, tenant, subject_ref=ref)
    _register(api, tenant, subject_ref="A", scan_date="2020-02-29")
    _register(api, tenant)  # no subject: no subject record
    viewer = auth(tenant, Role.VIEWER)
    first = api.get("/subjects", params={"limit": 2}, headers=viewer)
    assert first.status_code == 200, first.text
    page = first.json()
    assert [s["subject_ref"] for s in page["items"]] == ["A", "B"] and page["next_cursor"]
    assert page["items"][0]["study_count"] == 2 and page["items"][1]["study_count"] == 1
    rest = api.get("/subjects", params={"limit": 2, "cursor": page["next_cursor"]}, headers=viewer).json()
    assert [s["subject_ref"] for s in rest["items"]] == ["C"] and rest["next_cursor"] is None

    # Another tenant sees none of them, nor the cursor, nor a subject by its ref.
    assert api.get("/subjects", headers=auth(other, Role.VIEWER)).json()["items"] == []
    stolen = api.get("/subjects", params={"cursor": page["next_cursor"]}, headers=auth(other, Role.VIEWER))
    assert stolen.status_code == 400 and stolen.json()["code"] == "invalid_cursor"
    assert api.get("/subjects/A", headers=auth(other, Role.VIEWER)).status_code == 404
    assert api.get("/subjects/no-such", headers=viewer).status_code == 404
    assert api.get("/subjects/bad%20ref", headers=viewer).status_code == 422
    assert api.get("/subjects", headers={}).status_code == 401
