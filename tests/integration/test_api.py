"""The query API in process (FastAPI's test client, development tokens), against moto."""

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
from voxelpipe.adapters.identity_maps import DynamoIdentityMaps
from voxelpipe.adapters.storage import Storage
from voxelpipe.adapters.study_table import DynamoStudyStore
from voxelpipe.api.app import create_app
from voxelpipe.api.auth import Role, mint_dev_token
from voxelpipe.function_specs import API, EGRESS, PREPARE
from voxelpipe.identities import IdentityMap
from voxelpipe.pipeline.attempts import archive_attempt
from voxelpipe.status import StudyStatus
from voxelpipe.wiring import EnvVar

STORE = DynamoStudyStore()


@pytest.fixture
def api(cloud: LocalCloud, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    monkeypatch.setenv(EnvVar.AUTH_MODE, "dev")
    # Requests act as the API function: its role's policies hold them (infra/local/iam.py).
    with TestClient(acting_as(cloud, API.name, create_app())) as client:
        yield client


def auth(tenant: str = "lab-a", role: Role = Role.ADMIN) -> dict[str, str]:
    return {"authorization": f"Bearer {mint_dev_token(tenant, role)}"}


def _create(api: TestClient, content: bytes, tenant: str = "lab-a", **fields) -> dict:
    body = {"files": [{"name": "scan.nii.gz", "size": len(content)}], **fields}
    response = api.post("/studies", json=body, headers=auth(tenant, Role.UPLOADER))
    assert response.status_code == 201, response.text
    return response.json()


def _upload(cloud: LocalCloud, created: dict, content: bytes) -> None:
    boto3.client("s3").put_object(Bucket=cloud.bucket, Key=created["uploads"][0]["key"], Body=content)


def _completed(api: TestClient, cloud: LocalCloud, tenant: str = "lab-a") -> str:
    _, content = make_good_nifti()
    created = _create(api, content, tenant)
    _upload(cloud, created, content)
    assert wait_for_terminal([created["study_id"]], timeout_s=60)[created["study_id"]].status == "COMPLETED"
    return created["study_id"]


def test_health_docs_and_catalogue(api: TestClient):
    assert api.get("/health").json()["status"] == "ok"
    assert api.get("/docs").status_code == 200
    paths = api.get("/openapi.json").json()["paths"]
    assert {"/studies", "/studies/{study_id}", "/studies/{study_id}/results", "/analyses"} <= set(paths)
    items = {a["name"]: a for a in api.get("/analyses", headers=auth(role=Role.VIEWER)).json()["items"]}
    assert "qc" in items
    regional = items["regional"]
    assert regional["requires"] == ["tissue-seg", "registration"] and regional["runtime"] == "lambda"
    assert "regions.nii.gz" in regional["outputs"] and "atlas" in regional["parameters"]
    assert "affine.tfm" in items["registration"]["outputs"]


def test_validation_errors_are_problem_details_naming_the_field(api: TestClient):
    response = api.post(
        "/studies",
        json={"files": [{"name": "../x.nii", "size": 0}], "analyses": ["qc"], "age": 200},
        headers=auth(),
    )
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["code"] == "validation_failed" and problem["status"] == 422
    assert {e["field"] for e in problem["errors"]} == {"files.0.name", "files.0.size", "age"}
    unknown = api.post(
        "/studies", json={"files": [{"name": "a.nii", "size": 9}], "analyses": ["nope"]}, headers=auth()
    )
    assert unknown.status_code == 422 and unknown.json()["errors"][0]["field"] == "analyses"
    too_big = api.post("/studies", json={"files": [{"name": "a.nii", "size": 10**13}]}, headers=auth())
    assert too_big.status_code == 422 and too_big.json()["errors"][0]["field"] == "files.0.size"
    webhook = api.post(
        "/studies",
        json={"files": [{"name": "a.nii", "size": 9}], "webhook_url": "http://x.example"},
        headers=auth(),
    )
    assert webhook.status_code == 422 and webhook.json()["errors"][0]["field"] == "webhook_url"
    assert (
        api.get("/studies", headers={"authorization": "Bearer not-a-token"}).json()["code"]
        == "unauthenticated"
    )


def test_status_steps_results_and_listing(api: TestClient, cloud: LocalCloud):
    first = _completed(api, cloud)
    second = _completed(api, cloud)
    _create(api, b"x" * 10)  # still awaiting its upload
    view = api.get(f"/studies/{first}", headers=auth(role=Role.VIEWER)).json()
    assert view["status"] == "COMPLETED"
    assert all(step["progress"] == 100 and step["duration_ms"] is not None for step in view["steps"])
    results = api.get(f"/studies/{first}/results", headers=auth(role=Role.VIEWER)).json()
    assert {"qc/preview_axial.png", "results.json", "report.html", "report.pdf"} <= {
        a["path"] for a in results["artifacts"]
    }
    # The study links its report with presigned GETs (docs/report.md).
    report = view["report"]
    assert report["html"]["status"] == report["pdf"]["status"] == "available", report
    assert f"derived/{first}/report.pdf" in report["pdf"]["url"] and "Signature" in report["pdf"]["url"]
    assert api.get("/studies", headers=auth()).json()["items"][0]["report"] is None  # listings: no links

    page = api.get("/studies", params={"limit": 2}, headers=auth(role=Role.VIEWER)).json()
    assert len(page["items"]) == 2 and page["next_cursor"]
    rest = api.get("/studies", params={"limit": 2, "cursor": page["next_cursor"]}, headers=auth()).json()
    listed = [s["study_id"] for s in page["items"] + rest["items"]]
    assert len(listed) == 3 and listed[1:] == [second, first]  # newest first
    completed = api.get("/studies", params={"status": "COMPLETED"}, headers=auth()).json()["items"]
    assert {s["study_id"] for s in completed} == {first, second}
    # A cursor is no key into another tenant's studies.
    foreign = api.get("/studies", params={"cursor": page["next_cursor"]}, headers=auth("lab-b"))
    assert foreign.status_code == 400 and foreign.json()["code"] == "invalid_cursor"
    assert api.get("/studies", headers=auth("lab-b")).json()["items"] == []


def test_results_of_an_unfinished_study_are_a_conflict(api: TestClient):
    created = _create(api, b"x" * 10)
    response = api.get(f"/studies/{created['study_id']}/results", headers=auth())
    assert response.status_code == 409 and response.json()["code"] == "not_completed"
    complete = api.post(f"/studies/{created['study_id']}/complete", headers=auth(role=Role.UPLOADER))
    assert complete.status_code == 409 and complete.json()["missing"] == ["scan.nii.gz"]


def test_reprocess_opens_a_new_attempt_that_completes(api: TestClient, cloud: LocalCloud):
    study_id = _completed(api, cloud)
    response = api.post(f"/studies/{study_id}/reprocess", headers=auth(role=Role.UPLOADER))
    assert response.status_code == 202 and response.json()["attempt"] == 2
    record = wait_for_terminal([study_id], timeout_s=60)[study_id]
    assert record.status == StudyStatus.COMPLETED and record.attempt == 2
    executions = boto3.client("stepfunctions").list_executions(stateMachineArn=cloud.state_machine_arn)[
        "executions"
    ]
    assert sorted(e["name"] for e in executions) == [f"{study_id}-1", f"{study_id}-2"]
    steps = api.get(f"/studies/{study_id}", headers=auth()).json()["steps"]
    assert [s["step"] for s in steps] == ["prepare", "analysis:qc", "finalize"]  # attempt 2's own

    # Attempt 1 is kept under attempts/1/ (its results.json pointing there), the latest at the top.
    viewer = auth(role=Role.VIEWER)
    attempts = api.get(f"/studies/{study_id}/attempts", headers=viewer).json()["items"]
    assert [(a["attempt"], a["latest"], a["status"]) for a in attempts] == [
        (2, True, "COMPLETED"),
        (1, False, "COMPLETED"),
    ]
    assert attempts[1]["results_key"] == f"derived/{study_id}/attempts/1/results.json"
    assert attempts[1]["started_at"] and attempts[1]["ended_at"] and attempts[1]["analyses"] == ["qc"]
    latest = api.get(f"/studies/{study_id}/results", headers=viewer).json()
    assert latest["attempt"] == latest["results"]["attempt"] == 2
    assert not [a for a in latest["artifacts"] if a["path"].startswith("attempts/")]
    first = api.get(f"/studies/{study_id}/results", params={"attempt": 1}, headers=viewer).json()
    assert first["attempt"] == first["results"]["attempt"] == 1
    paths = {a["path"] for a in first["artifacts"]}
    assert {"results.json", "report.html", "qc/preview_axial.png"} <= paths
    moved = first["results"]["analyses"]["qc"]["artifacts"]
    assert moved and all(key.startswith(f"derived/{study_id}/attempts/1/qc/") for key in moved)
    assert first["results"]["report"]["html"]["key"] == f"derived/{study_id}/attempts/1/report.html"
    missing = api.get(f"/studies/{study_id}/results", params={"attempt": 7}, headers=viewer)
    assert missing.status_code == 404 and missing.json()["code"] == "attempt_not_found"
    # Moving attempt 1 again (a duplicate call, Prepare's own check) moves nothing.
    assert archive_attempt(Storage(cloud.bucket), study_id, 1) == 0
    again = api.get(f"/studies/{study_id}/results", params={"attempt": 1}, headers=viewer).json()
    assert again["results"] == first["results"] and {a["path"] for a in again["artifacts"]} == paths
    # Deleting the study removes every attempt's objects and rows.
    assert api.delete(f"/studies/{study_id}", headers=auth()).status_code == 200
    assert (
        not boto3.client("s3")
        .list_objects_v2(Bucket=cloud.bucket, Prefix=f"derived/{study_id}/")
        .get("Contents")
    )


def test_reprocess_names_other_analyses_checked_as_registration_checks_them(
    api: TestClient, cloud: LocalCloud
):
    study_id = _completed(api, cloud)
    uploader = auth(role=Role.UPLOADER)
    bad = [
        ({"analyses": ["nope"]}, "analyses"),
        ({"parameters": {"normative": {"x": 1}}}, "parameters"),
        ({"analyses": ["qc"], "parameters": {"qc": {"no_such_parameter": 1}}}, "parameters.qc"),
        ({"analyses": []}, "analyses"),
        ({"priority": "urgent"}, "priority"),
        ({"colour": "red"}, "colour"),
    ]
    for body, field in bad:
        response = api.post(f"/studies/{study_id}/reprocess", json=body, headers=uploader)
        assert response.status_code == 422, (body, response.text)
        assert response.json()["errors"][0]["field"] == field, (body, response.json())
    assert api.get(f"/studies/{study_id}", headers=uploader).json()["attempt"] == 1  # nothing opened
    response = api.post(
        f"/studies/{study_id}/reprocess",
        json={"analyses": ["volumetrics"], "priority": "high"},
        headers=uploader,
    )
    assert response.status_code == 202, response.text
    assert response.json()["analyses"] == ["tissue-seg", "volumetrics"]
    (row,) = [row for row in STORE.audit_trail(study_id) if row.action == "reprocess"]
    assert row.detail["changed"]["analyses"] == {"from": ["qc"], "to": ["tissue-seg", "volumetrics"]}
    assert row.detail["changed"]["priority"] == {"from": "normal", "to": "high"}
    wait_for_terminal([study_id], timeout_s=120)  # its execution ends before the cloud does


def test_of_six_concurrent_reprocess_requests_exactly_one_is_accepted(api: TestClient, cloud: LocalCloud):
    study_id = _completed(api, cloud)
    release = threading.Event()

    def held_prepare(event, context):  # attempt 2 stays RUNNING until every request is answered
        release.wait(timeout=60)
        return real_prepare(event, context)

    real_prepare = cloud.handler("prepare")
    start = threading.Barrier(6)
    answers: list[tuple[int, int | None]] = []

    def reprocess() -> None:
        with TestClient(api.app) as client:
            start.wait()
            response = client.post(f"/studies/{study_id}/reprocess", headers=auth(role=Role.UPLOADER))
            answers.append((response.status_code, response.json().get("attempt")))

    with cloud.override("prepare", held_prepare):
        threads = [threading.Thread(target=reprocess) for _ in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        release.set()
        assert sorted(answers, key=str) == [(202, 2)] + [(409, None)] * 5
        record = wait_for_terminal([study_id], timeout_s=60)[study_id]
    assert record.status == StudyStatus.COMPLETED and record.attempt == 2
    executions = boto3.client("stepfunctions").list_executions(stateMachineArn=cloud.state_machine_arn)
    assert sorted(e["name"] for e in executions["executions"]) == [f"{study_id}-1", f"{study_id}-2"]


def test_a_rejected_study_cannot_be_reprocessed(api: TestClient, cloud: LocalCloud):
    created = _create(api, b"not a scan")
    _upload(cloud, created, b"not a scan")
    wait_for_terminal([created["study_id"]], timeout_s=60)
    response = api.post(f"/studies/{created['study_id']}/reprocess", headers=auth())
    assert response.status_code == 409 and response.json()["code"] == "not_reprocessable"


def test_delete_removes_every_object_and_keeps_the_audit_trail(api: TestClient, cloud: LocalCloud):
    study_id = _completed(api, cloud)
    identity_maps = DynamoIdentityMaps()
    with cloud.acting_as(PREPARE.name):  # as Prepare keeps a DICOM study's originals' identifiers
        identity_maps.save(study_id, IdentityMap(uids={"2.25.1": "1.2.3"}))
    response = api.delete(f"/studies/{study_id}", headers=auth(role=Role.ADMIN))
    assert response.status_code == 200 and response.json()["objects_removed"] > 0
    with cloud.acting_as(EGRESS.name):
        assert identity_maps.get(study_id) is None  # the honest broker's map went with the study
    versions = boto3.client("s3").list_object_versions(Bucket=cloud.bucket)
    keys = [v["Key"] for v in versions.get("Versions", []) + versions.get("DeleteMarkers", [])]
    assert not [k for k in keys if study_id in k], "no version of any object of the study survives"
    assert api.get(f"/studies/{study_id}", headers=auth()).status_code == 404
    audit = boto3.resource("dynamodb").Table(cloud.env(EnvVar.AUDIT_TABLE))
    actions = [
        r["action"]
        for r in audit.query(
            KeyConditionExpression="study_id = :s", ExpressionAttributeValues={":s": study_id}
        )["Items"]
    ]
    assert actions[0] == "registered" and actions[-1] == "deleted"


ENDPOINTS = [
    ("GET", "/studies/{id}"),
    ("GET", "/studies/{id}/results"),
    ("POST", "/studies/{id}/complete"),
    ("POST", "/studies/{id}/reprocess"),
    ("DELETE", "/studies/{id}"),
]


def test_another_tenants_study_is_404_on_every_endpoint(api: TestClient, cloud: LocalCloud):
    study_id = _completed(api, cloud, tenant="lab-a")
    for method, path in ENDPOINTS:
        response = api.request(method, path.format(id=study_id), headers=auth("lab-b", Role.ADMIN))
        assert response.status_code == 404, (method, path)
        assert response.json()["code"] == "study_not_found"
    assert api.get(f"/studies/{study_id}", headers=auth("lab-a")).json()["status"] == "COMPLETED"


def test_each_role_is_refused_what_it_may_not_do(api: TestClient, cloud: LocalCloud):
    study_id = _completed(api, cloud)
    forbidden = {
        Role.VIEWER: [
            ("POST", "/studies"),
            ("POST", "/studies/{id}/complete"),
            ("POST", "/studies/{id}/reprocess"),
            ("DELETE", "/studies/{id}"),
        ],
        Role.UPLOADER: [("DELETE", "/studies/{id}")],
        Role.ADMIN: [],
    }
    body = {"files": [{"name": "a.nii", "size": 9}]}
    for role, calls in forbidden.items():
        for method, path in calls:
            response = api.request(
                method,
                path.format(id=study_id),
                headers=auth(role=role),
                json=body if path == "/studies" else None,
            )
            assert response.status_code == 403, (role, method, path)
            assert response.json()["code"] == "forbidden"
        assert api.get(f"/studies/{study_id}", headers=auth(role=role)).status_code == 200


def test_a_dicom_series_completes_on_request_with_what_arrived(api: TestClient, cloud: LocalCloud):
    from tests.fixtures.dicom import make_series

    series = make_series(n_slices=6, rows=16, cols=16, shuffle=False)
    files = [{"name": f"im{n}.dcm", "size": len(data)} for n, data in enumerate(series.instances)]
    files.append({"name": "never-sent.dcm", "size": 100})
    response = api.post(
        "/studies", json={"format": "dicom", "files": files}, headers=auth(role=Role.UPLOADER)
    )
    assert response.status_code == 201, response.text
    created = response.json()
    early = api.post(f"/studies/{created['study_id']}/complete", headers=auth(role=Role.UPLOADER))
    assert early.status_code == 409 and "never-sent.dcm" in early.json()["missing"]
    for target, data in zip(created["uploads"], series.instances, strict=False):
        boto3.client("s3").put_object(Bucket=cloud.bucket, Key=target["key"], Body=data)
    assert api.get(f"/studies/{created['study_id']}", headers=auth()).json()["status"] == "AWAITING_UPLOAD"
    done = api.post(f"/studies/{created['study_id']}/complete", headers=auth(role=Role.UPLOADER))
    assert done.status_code == 202 and done.json()["format"] == "dicom"
    record = wait_for_terminal([created["study_id"]], timeout_s=60)[created["study_id"]]
    assert record.status == StudyStatus.COMPLETED, record.reason_detail
    assert record.input["instances"] == 6


def test_an_object_larger_than_declared_is_rejected_too_large(api: TestClient, cloud: LocalCloud):
    # S3 holds a presigned POST to the declared size; a writer it does not (an SDK call) meets ingest.
    _, content = make_good_nifti()
    created = _create(api, content)
    _upload(cloud, created, content + b"\0" * 100)
    study = wait_for_terminal([created["study_id"]], timeout_s=60)[created["study_id"]]
    assert study.status == StudyStatus.REJECTED and study.reason == "too_large"
    assert f"declared {len(content)}" in (study.reason_detail or "")


def test_a_nifti_study_is_one_file(api: TestClient):
    body = {"files": [{"name": "a.nii", "size": 9}, {"name": "b.nii", "size": 9}]}
    response = api.post("/studies", json=body, headers=auth())
    assert response.status_code == 422 and "one file" in response.json()["errors"][0]["message"]


def test_normative_scores_with_the_uploaders_reference_table(api: TestClient, cloud: LocalCloud):
    # A made-up table for the test's phantom: the point is the plumbing, not the norms.
    table = "measure,sex,age_min,age_max,mean,sd,source\nbpf,any,0,120,0.5,0.25,test fixture\n"
    _, content = make_good_nifti()
    created = _create(
        api,
        content,
        analyses=["normative"],
        age=71,
        sex="F",
        parameters={"normative": {"reference_table": table}},
    )
    _upload(cloud, created, content)
    record = wait_for_terminal([created["study_id"]], timeout_s=120)[created["study_id"]]
    assert record.status == StudyStatus.COMPLETED, record.error
    assert record.analyses == ["tissue-seg", "volumetrics", "normative"]
    results = api.get(f"/studies/{created['study_id']}/results", headers=auth()).json()["results"]
    normative = results["analyses"]["normative"]["measures"]
    assert normative["status"] == "ok", normative
    bpf = normative["scores"]["bpf"]
    assert bpf["status"] == "ok" and bpf["reference"]["source"] == "test fixture"
    assert abs(bpf["z"] - (results["analyses"]["volumetrics"]["measures"]["bpf"] - 0.5) / 0.25) < 1e-3
    misplaced = api.post(
        "/studies",
        json={"files": [{"name": "a.nii", "size": 9}], "parameters": {"normative": {}}},
        headers=auth(),
    )
    assert misplaced.status_code == 422 and misplaced.json()["errors"][0]["field"] == "parameters"


def test_bulk_reprocess_is_for_admins_and_refuses_bad_queries(api: TestClient, cloud: LocalCloud):
    body = {"where": {"status": "COMPLETED", "without_analysis": "regional"}, "analyses": ["qc"]}
    for role in (Role.UPLOADER, Role.VIEWER):
        for method, path in (("POST", "/reprocess-batches"), ("GET", "/reprocess-batches")):
            response = api.request(method, path, json=body, headers=auth(role=role))
            assert response.status_code == 403 and response.json()["code"] == "forbidden", (role, path)
    bad = [
        ({"where": {"status": "RUNNING"}}, "where.status"),
        ({"where": {"colour": "red"}}, "where.colour"),
        ({"where": {"created_from": "yesterday"}}, "where.created_from"),
        ({"analyses": ["nope"]}, "analyses"),
        ({"analyses": []}, "analyses"),
        ({"parameters": {"qc": {}}}, "parameters"),
        ({"max_in_flight": 0}, "max_in_flight"),
        ({"max_in_flight": 10_000}, "max_in_flight"),
    ]
    for query, field in bad:
        response = api.post("/reprocess-batches", json=query, headers=auth())
        assert response.status_code == 422, (query, response.text)
        assert response.json()["errors"][0]["field"] == field, (query, response.json())
    # Nothing matches: the batch is made, selects none and is done at once.
    response = api.post("/reprocess-batches", json=body, headers=auth())
    assert response.status_code == 202, response.text
    batch = response.json()
    assert batch["progress"] == {**batch["progress"], "selected": 0, "done": True} and batch["finished_at"]
    assert api.get(f"/reprocess-batches/{batch['batch_id']}", headers=auth()).json()["studies"] == []
    other = api.get(f"/reprocess-batches/{batch['batch_id']}", headers=auth("lab-b"))
    assert other.status_code == 404 and other.json()["code"] == "batch_not_found"
    assert api.get("/reprocess-batches", headers=auth("lab-b")).json()["items"] == []
