"""The API function as API Gateway calls it: REST proxy events through Mangum, against moto."""

from __future__ import annotations

import base64
import json

import boto3
import requests

from infra.local.cloud import LocalCloud
from infra.local.studies import wait_for_terminal
from tests.fixtures.events import load_event
from tests.fixtures.scans import mni152_at_2mm
from voxelpipe.status import StudyStatus


def _call(cloud: LocalCloud, event: dict) -> tuple[int, dict]:
    response, error = cloud.invoke("api", event)
    assert error is None, response
    return response["statusCode"], json.loads(response["body"])


def test_create_upload_follow_and_fetch_results_through_api_gateway_events(cloud: LocalCloud):
    data = mni152_at_2mm()  # a real scan, small: this is about the events, not the measures
    status, created = _call(
        cloud, load_event("api_create_study.json", TENANT="lab-a", ROLE="uploader", SIZE=str(len(data)))
    )
    assert status == 201, created
    (target,) = created["uploads"]
    assert target["method"] == "post" and target["file"] == "t1w.nii.gz"
    # Stored under the name the server chose: the uploader's file name stays in the study's record.
    assert target["key"] == f"uploads/lab-a/{created['study_id']}/00000.nii.gz"

    # The policy binds the exact key and the exact size.
    policy = json.loads(base64.b64decode(target["fields"]["policy"]))
    assert {"key": target["key"]} in policy["conditions"]
    assert ["content-length-range", len(data), len(data)] in policy["conditions"]

    # Upload as the client would; moto serves presigned requests made with `requests`.
    response = requests.post(
        target["url"], data=target["fields"], files={"file": ("t1w.nii.gz", data)}, timeout=30
    )
    assert response.status_code in (200, 204), response.text
    record = wait_for_terminal([created["study_id"]], timeout_s=120)[created["study_id"]]
    assert record.status == StudyStatus.COMPLETED

    get = load_event("api_get_study.json", TENANT="lab-a", ROLE="viewer", STUDY_ID=created["study_id"])
    status, view = _call(cloud, get)
    assert status == 200 and view["status"] == "COMPLETED" and view["subject"]["age"] == 67
    assert [step["step"] for step in view["steps"]] == ["validate", "prepare", "analysis:qc", "finalize"]

    results_event = {**get, "path": f"/studies/{created['study_id']}/results"}
    status, results = _call(cloud, results_event)
    assert status == 200
    assert results["results"]["provenance"]["input_sha256"] == view["input"]["sha256"]
    preview = next(a for a in results["artifacts"] if a["path"] == "qc/preview_axial.png")
    assert requests.get(preview["url"], timeout=30).content.startswith(b"\x89PNG")

    # The audit trail names the caller and where the call came from.
    audit = boto3.resource("dynamodb").Table(cloud.env("VOXELPIPE_AUDIT_TABLE"))
    rows = audit.query(
        KeyConditionExpression="study_id = :s", ExpressionAttributeValues={":s": created["study_id"]}
    )
    registered = next(r for r in rows["Items"] if r["action"] == "registered")
    assert (
        registered["actor"] == "7d8ca528-4931-4254-9273-ea5ee853f271"
        and registered["source"] == "198.51.100.7"
    )
    # The access audit: one row per call, with API Gateway's request id, source and user agent.
    access = boto3.resource("dynamodb").Table(cloud.env("VOXELPIPE_ACCESS_AUDIT_TABLE"))
    calls = access.query(KeyConditionExpression="tenant = :t", ExpressionAttributeValues={":t": "lab-a"})
    by_action = {row["action"]: row for row in calls["Items"]}
    assert set(by_action) == {"study.create", "study.read", "study.results"}
    read = by_action["study.results"]
    assert (read["request_id"], read["source_ip"], read["user_agent"]) == (
        get["requestContext"]["requestId"],
        "198.51.100.7",
        "curl/8.5.0",
    )
    assert read["status"] == 200 and read["study_id"] == created["study_id"]
    assert json.loads(read["resource"])["download_links"] == len(results["artifacts"])


def test_another_tenant_gets_404_and_missing_claims_get_401(cloud: LocalCloud):
    status, created = _call(
        cloud, load_event("api_create_study.json", TENANT="lab-a", ROLE="admin", SIZE="1000")
    )
    assert status == 201
    status, problem = _call(
        cloud, load_event("api_get_study.json", TENANT="lab-b", ROLE="admin", STUDY_ID=created["study_id"])
    )
    assert status == 404 and problem["code"] == "study_not_found"
    anonymous = load_event("api_get_study.json", TENANT="lab-a", ROLE="admin", STUDY_ID=created["study_id"])
    del anonymous["requestContext"]["authorizer"]
    status, problem = _call(cloud, anonymous)
    assert status == 401 and problem["type"].endswith("/unauthenticated")
