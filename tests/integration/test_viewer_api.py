"""The viewer's links and data API against the local cloud: a link's grant reads its study (or its
subject's studies) and nothing else; expired, forged or missing grants are 401s; another tenant's
study is a 404 as everywhere."""

from __future__ import annotations

import time
from collections.abc import Iterator
from urllib.parse import parse_qs, urlsplit

import boto3
import pytest
from fastapi.testclient import TestClient

from infra.local.cloud import LocalCloud
from infra.local.serve import acting_as
from voxelpipe.adapters import secrets
from voxelpipe.api.app import create_app
from voxelpipe.api.auth import Role, mint_dev_token
from voxelpipe.function_specs import API
from voxelpipe.viewer_grants import grant_key, issue_grant
from voxelpipe.wiring import EnvVar


@pytest.fixture
def api(cloud: LocalCloud, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    monkeypatch.setenv(EnvVar.AUTH_MODE, "dev")
    with TestClient(acting_as(cloud, API.name, create_app())) as client:
        yield client


def auth(tenant: str = "lab-a", role: Role = Role.VIEWER) -> dict[str, str]:
    return {"authorization": f"Bearer {mint_dev_token(tenant, role)}"}


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def _create(api: TestClient, tenant: str = "lab-a", subject_ref: str | None = None) -> str:
    body = {"files": [{"name": "scan.nii.gz", "size": 1000}], "subject_ref": subject_ref}
    response = api.post("/studies", json=body, headers=auth(tenant, Role.UPLOADER))
    assert response.status_code == 201, response.text
    return str(response.json()["study_id"])


def _grant_of(link: dict[str, str]) -> str:
    return urlsplit(link["url"]).fragment.removeprefix("grant=")


def test_a_study_link_opens_its_study_with_presigned_volumes(
    api: TestClient, cloud: LocalCloud, monkeypatch: pytest.MonkeyPatch
):
    study_id = _create(api, subject_ref="sub-1")
    s3 = boto3.client("s3")
    for name in ("input/volume.nii.gz", "tissue-seg/labels.nii.gz", "regional/regions.nii.gz"):
        s3.put_object(Bucket=cloud.bucket, Key=f"derived/{study_id}/{name}", Body=b"x")
    link = api.post(f"/studies/{study_id}/viewer-link", headers=auth(role=Role.VIEWER))
    assert link.status_code == 200, link.text
    url = urlsplit(link.json()["url"])
    assert (url.path, url.query) == (f"/viewer/studies/{study_id}", "")  # the grant only in the fragment
    monkeypatch.setenv(EnvVar.LIVE_URL, "ws://127.0.0.1:9/live")
    data = api.get(f"/viewer/api/studies/{study_id}", headers=bearer(_grant_of(link.json())))
    assert data.status_code == 200, data.text
    body = data.json()
    assert body["study"]["study_id"] == study_id and body["study"]["status"] == "AWAITING_UPLOAD"
    assert body["live_url"] == "ws://127.0.0.1:9/live"
    assert body["volume"]["name"] == "volume.nii.gz"
    assert [(m["analysis"], m["name"]) for m in body["label_maps"]] == [
        ("tissue-seg", "labels.nii.gz"),
        ("regional", "regions.nii.gz"),
    ]
    tissue, regional = body["label_maps"]
    assert [(e["index"], e["name"], e["colour"]) for e in tissue["legend"]] == [
        (1, "CSF", "#2878ff"),
        (2, "Grey matter", "#28c850"),
        (3, "White matter", "#ffd228"),
    ]
    assert len(regional["legend"]) == 22
    for url_text in (body["volume"]["url"], tissue["url"], regional["url"]):
        query = parse_qs(urlsplit(url_text).query)
        assert query["X-Amz-Expires"] == ["900"] and "X-Amz-Signature" in query
    assert f"derived/{study_id}/tissue-seg/labels.nii.gz" in tissue["url"]


def test_grants_are_checked(api: TestClient, cloud: LocalCloud):
    mine, other = _create(api), _create(api)
    foreign = _create(api, tenant="lab-b")
    key = grant_key(secrets.webhook_secret())
    grant, _ = issue_grant(key, tenant="lab-a", issued_to="u", study_id=mine)
    assert api.get(f"/viewer/api/studies/{mine}", headers=bearer(grant)).status_code == 200
    missing = api.get(f"/viewer/api/studies/{mine}")
    assert (missing.status_code, missing.json()["code"]) == (401, "unauthenticated")
    assert missing.headers["content-type"] == "application/problem+json"
    expired, _ = issue_grant(key, tenant="lab-a", issued_to="u", study_id=mine, now=time.time() - 3600)
    answer = api.get(f"/viewer/api/studies/{mine}", headers=bearer(expired))
    assert (answer.status_code, answer.json()["code"]) == (401, "grant_expired")
    forged, _ = issue_grant(
        b"not the deployment's key, 32 bytes or more", tenant="lab-a", issued_to="u", study_id=mine
    )
    answer = api.get(f"/viewer/api/studies/{mine}", headers=bearer(forged))
    assert (answer.status_code, answer.json()["code"]) == (401, "invalid_grant")
    # A user's token is not a grant.
    answer = api.get(f"/viewer/api/studies/{mine}", headers=auth())
    assert (answer.status_code, answer.json()["code"]) == (401, "invalid_grant")
    # Another study of the same tenant, and another tenant's study: as if they did not exist.
    assert api.get(f"/viewer/api/studies/{other}", headers=bearer(grant)).status_code == 404
    theirs, _ = issue_grant(key, tenant="lab-b", issued_to="u", study_id=mine)
    assert api.get(f"/viewer/api/studies/{mine}", headers=bearer(theirs)).status_code == 404
    # And no link to another tenant's study.
    assert api.post(f"/studies/{foreign}/viewer-link", headers=auth()).status_code == 404


def test_a_subject_link_reads_that_subject_s_studies_only(api: TestClient):
    first, second = _create(api, subject_ref="sub-7"), _create(api, subject_ref="sub-7")
    elsewhere = _create(api, subject_ref="sub-8")
    _create(api, tenant="lab-b", subject_ref="sub-7")
    link = api.post("/subjects/sub-7/viewer-link", headers=auth())
    assert link.status_code == 200, link.text
    assert urlsplit(link.json()["url"]).path == "/viewer/subjects/sub-7"
    grant = _grant_of(link.json())
    listing = api.get("/viewer/api/subjects/sub-7", headers=bearer(grant))
    assert listing.status_code == 200, listing.text
    assert [s["study"]["study_id"] for s in listing.json()["studies"]] == [second, first]  # newest first
    assert api.get(f"/viewer/api/studies/{first}", headers=bearer(grant)).status_code == 200
    assert api.get(f"/viewer/api/studies/{elsewhere}", headers=bearer(grant)).status_code == 404
    assert api.get("/viewer/api/subjects/sub-8", headers=bearer(grant)).status_code == 404
    # A subject with no study of this tenant: no link.
    assert api.post("/subjects/sub-9/viewer-link", headers=auth()).status_code == 404
    assert api.post("/subjects/not a ref/viewer-link", headers=auth()).status_code == 422


def test_the_pages_say_when_niivue_is_not_installed(api: TestClient, monkeypatch: pytest.MonkeyPatch):
    from voxelpipe.api.routes import viewer

    monkeypatch.setattr(viewer, "niivue_missing", lambda: "run `make setup`")
    page = api.get("/viewer/studies/x")
    assert page.status_code == 503 and "make setup" in page.json()["detail"]


def test_static_files_stay_in_their_folder(api: TestClient):
    assert api.get("/viewer/static/viewer.js").headers["content-type"].startswith("text/javascript")
    assert api.get("/viewer/static/viewer.css").headers["cache-control"] == "no-cache"
    for path in ("../assets.py", "..%2Fassets.py", "niivue/0.69.0/niivue.js.sha256", "nothing.js"):
        assert api.get(f"/viewer/static/{path}").status_code == 404, path
