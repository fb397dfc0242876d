"""`voxelpipe serve`'s S3 endpoint refuses, as S3 does, what the API did not presign.

Each case is one request a client (or an attacker on this machine) might send; each gets S3's XML
refusal, and afterwards the cloud is as it was: the studies, their results and artifacts."""

from __future__ import annotations

import base64
import json
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import boto3
import httpx
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials

from infra.cli.client import Client
from tests.fixtures.scans import mni152_at_2mm
from voxelpipe.api.auth import DEV_SECRET_FILE_ENV, Role, mint_dev_token

REGION = "us-east-1"
OTHER = Credentials("AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")
DECLARED = 1000


@dataclass(frozen=True)
class World:
    """What the cases aim at: a completed study and its artifacts, and two awaiting their upload."""

    api: str
    s3: str  # the S3 endpoint, http://host:port
    bucket: str
    access_key: str  # the session's key id (public: every presigned URL names it)
    completed: str
    results: dict[str, Any]
    artifact_url: str
    artifact: bytes
    pending: dict[str, Any]  # lab-a's upload target (a presigned POST for DECLARED bytes)
    pending_study: str
    other_tenant_study: str
    other_tenant_key: str

    @property
    def results_key(self) -> str:
        return f"derived/{self.completed}/results.json"


def _client(url: str, tenant: str) -> Client:
    return Client(url, mint_dev_token(tenant, Role.UPLOADER))


@pytest.fixture(scope="module")
def world(server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with pytest.MonkeyPatch.context() as patch:  # the tests' own token secret, before theirs is set
        patch.setenv(DEV_SECRET_FILE_ENV, str(tmp_path_factory.getbasetemp() / "dev-token-secret"))
        yield _world(server, tmp_path_factory.mktemp("scan") / "t1w.nii.gz")


def _world(server: str, scan: Path) -> World:
    lab_a, lab_b = _client(server, "lab-a"), _client(server, "lab-b")
    scan.write_bytes(mni152_at_2mm())  # a real scan, small: the study is only there to be read
    created = lab_a.create_study([scan], analyses=["qc"])
    lab_a.upload(created["uploads"][0], scan)  # an honest form POST
    assert lab_a.wait(created["study_id"], timeout_s=120)["status"] == "COMPLETED"
    results = lab_a.results(created["study_id"])
    (artifact_url,) = [a["url"] for a in results["artifacts"] if a["path"] == "qc/preview_axial.png"]
    artifact = httpx.get(artifact_url)  # an honest presigned GET
    assert artifact.status_code == 200 and artifact.content.startswith(b"\x89PNG")
    declared = {"files": [{"name": "t1w.nii", "size": DECLARED}]}
    pending = lab_a.http.post("/studies", json=declared).json()
    other = lab_b.http.post("/studies", json=declared).json()
    (target,) = pending["uploads"]
    url = urlsplit(target["url"])
    return World(
        api=server,
        s3=f"{url.scheme}://{url.netloc}",
        bucket=url.path.strip("/"),
        access_key=target["fields"]["x-amz-credential"].split("/")[0],
        completed=created["study_id"],
        results=results["results"],
        artifact_url=artifact_url,
        artifact=artifact.content,
        pending=target,
        pending_study=pending["study_id"],
        other_tenant_study=other["study_id"],
        other_tenant_key=other["uploads"][0]["key"],
    )


# -- requests ------------------------------------------------------------------------------------


def _form(world: World, body: bytes = b"\0" * DECLARED, **changes: str) -> httpx.Response:
    """The pending study's presigned POST, its fields changed (an empty value drops a field)."""
    fields = {name: value for name, value in {**world.pending["fields"], **changes}.items() if value}
    return httpx.post(world.pending["url"], data=fields, files={"file": ("t1w.nii", body)})


def _wider_policy(world: World) -> str:
    """The pending form's policy, re-encoded to allow any size (its signature no longer fits)."""
    document = json.loads(base64.b64decode(world.pending["fields"]["policy"]))
    document["conditions"] = [
        ["content-length-range", 0, 10**9] if isinstance(c, list) else c for c in document["conditions"]
    ]
    return base64.b64encode(json.dumps(document).encode()).decode()


def _presigner(world: World, credentials: Credentials) -> Any:
    return boto3.client(
        "s3",
        region_name=REGION,
        endpoint_url=world.s3,
        aws_access_key_id=credentials.access_key,
        aws_secret_access_key=credentials.secret_key,
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
    )


def _presigned_get(world: World, credentials: Credentials, key: str) -> httpx.Response:
    url = _presigner(world, credentials).generate_presigned_url(
        "get_object", Params={"Bucket": world.bucket, "Key": key}
    )
    return httpx.get(url)


def _backdated(url: str, days: int) -> str:
    """The URL signed `days` earlier (its date and its credential's date moved back)."""
    parts = urlsplit(url)
    params = dict(pair.split("=", 1) for pair in parts.query.split("&"))
    signed = datetime.strptime(params["X-Amz-Date"], "%Y%m%dT%H%M%SZ") - timedelta(days=days)
    params["X-Amz-Date"] = signed.strftime("%Y%m%dT%H%M%SZ")
    scope = params["X-Amz-Credential"].split("%2F")  # key id, date, region, service, terminal
    params["X-Amz-Credential"] = "%2F".join([scope[0], signed.strftime("%Y%m%d"), *scope[2:]])
    return parts._replace(query="&".join(f"{k}={v}" for k, v in params.items())).geturl()


def _header_signed(
    method: str, url: str, service: str, headers: dict[str, str] | None = None, body: bytes = b""
) -> httpx.Response:
    """A request signed as SDKs sign them (an Authorization header), with credentials of our own."""
    request = AWSRequest(method=method, url=url, headers=headers or {}, data=body)
    SigV4Auth(OTHER, service, REGION).add_auth(request)
    return httpx.request(method, url, headers=dict(request.headers.items()), content=body)


CASES: dict[str, tuple[Callable[[World], httpx.Response], int, str, str]] = {
    "form POST to another tenant's study": (
        lambda w: _form(w, key=w.other_tenant_key),
        403,
        "AccessDenied",
        'Invalid according to Policy: Policy Condition failed: ["eq", "$key"',
    ),
    "form POST over another study's results.json": (
        lambda w: _form(w, key=w.results_key),
        403,
        "AccessDenied",
        "Policy Condition failed",
    ),
    "form POST with a wider length range, signature kept": (
        lambda w: _form(w, body=b"\0" * 5000, policy=_wider_policy(w)),
        403,
        "SignatureDoesNotMatch",
        "does not match",
    ),
    "form POST with a field the policy does not name": (
        lambda w: _form(w, **{"Content-Type": "text/html"}),
        403,
        "AccessDenied",
        "Extra input fields: content-type",
    ),
    "form POST of a body larger than declared": (
        lambda w: _form(w, body=b"\0" * (DECLARED + 1)),
        400,
        "EntityTooLarge",
        "exceeds the maximum allowed size",
    ),
    "form POST without policy or signature": (
        lambda w: _form(w, **{name: "" for name in w.pending["fields"] if name != "key"}),
        403,
        "AccessDenied",
        "Access Denied",
    ),
    "form POST signed with other credentials": (
        lambda w: httpx.post(
            w.pending["url"],
            data=_presigner(w, OTHER).generate_presigned_post(Bucket=w.bucket, Key=w.other_tenant_key)[
                "fields"
            ],
            files={"file": ("t1w.nii", b"\0" * DECLARED)},
        ),
        403,
        "InvalidAccessKeyId",
        "does not exist in our records",
    ),
    "presigned GET of another key, signature kept": (
        lambda w: httpx.get(w.artifact_url.replace("qc/preview_axial.png", "results.json")),
        403,
        "SignatureDoesNotMatch",
        "does not match",
    ),
    "presigned GET past its expiry": (
        lambda w: httpx.get(_backdated(w.artifact_url, days=2)),
        403,
        "AccessDenied",
        "Request has expired",
    ),
    "presigned GET used to DELETE": (
        lambda w: httpx.delete(w.artifact_url),
        403,
        "SignatureDoesNotMatch",
        "does not match",
    ),
    "GET signed with the session's key id and a guessed secret": (
        lambda w: _presigned_get(w, Credentials(w.access_key, "guessed"), w.results_key),
        403,
        "SignatureDoesNotMatch",
        "does not match",
    ),
    "GET presigned with other credentials": (
        lambda w: _presigned_get(w, OTHER, w.results_key),
        403,
        "InvalidAccessKeyId",
        "does not exist in our records",
    ),
    "unsigned GET of an object": (
        lambda w: httpx.get(f"{w.s3}/{w.bucket}/{w.results_key}"),
        403,
        "AccessDenied",
        "Access Denied",
    ),
    "unsigned ListBuckets": (lambda w: httpx.get(f"{w.s3}/"), 403, "AccessDenied", "Access Denied"),
    "unsigned ListObjectsV2": (
        lambda w: httpx.get(f"{w.s3}/{w.bucket}?list-type=2&prefix=uploads/"),
        403,
        "AccessDenied",
        "Access Denied",
    ),
    "ListObjectsV2 signed with other credentials": (
        lambda w: _header_signed("GET", f"{w.s3}/{w.bucket}?list-type=2", "s3"),
        403,
        "InvalidAccessKeyId",
        "does not exist in our records",
    ),
    "moto's reset API": (
        lambda w: httpx.post(f"{w.s3}/moto-api/reset"),
        403,
        "AccessDenied",
        "Access Denied",
    ),
    "moto's data dump": (
        lambda w: httpx.get(f"{w.s3}/moto-api/data.json"),
        403,
        "AccessDenied",
        "Access Denied",
    ),
    "a DynamoDB Scan to the S3 port": (
        lambda w: _header_signed(
            "POST",
            f"{w.s3}/",
            "dynamodb",
            {"X-Amz-Target": "DynamoDB_20120810.Scan", "Content-Type": "application/x-amz-json-1.0"},
            json.dumps({"TableName": "studies"}).encode(),
        ),
        403,
        "InvalidAccessKeyId",
        "does not exist in our records",
    ),
    "an unsigned SQS ListQueues to the S3 port": (
        lambda w: httpx.post(f"{w.s3}/", data={"Action": "ListQueues", "Version": "2012-11-05"}),
        403,
        "AccessDenied",
        "Access Denied",
    ),
    "a method S3 does not have": (
        lambda w: httpx.request("PATCH", f"{w.s3}/{w.bucket}/{w.results_key}"),
        405,
        "MethodNotAllowed",
        "not allowed",
    ),
}


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_s3_refuses_what_the_api_did_not_presign(world: World, case: str):
    send, status, code, message = CASES[case]
    response = send(world)
    assert response.status_code == status, response.text
    error = ET.fromstring(response.content)
    assert error.tag == "Error" and error.findtext("Code") == code, response.text
    assert message in (error.findtext("Message") or ""), response.text
    _assert_intact(world)


def _assert_intact(world: World) -> None:
    """The cloud as the refused request found it: studies, results, artifacts."""
    lab_a, lab_b = _client(world.api, "lab-a"), _client(world.api, "lab-b")
    listed = {item["study_id"]: item["status"] for item in lab_a.list_studies()["items"]}
    assert listed[world.completed] == "COMPLETED"
    assert listed[world.pending_study] == "AWAITING_UPLOAD"
    assert lab_b.study(world.other_tenant_study)["status"] == "AWAITING_UPLOAD"
    assert lab_a.results(world.completed)["results"] == world.results
    assert httpx.get(world.artifact_url).content == world.artifact


def test_an_honest_form_may_carry_x_ignore_fields(server: str, tmp_path: Path):
    client = _client(server, "lab-a")
    scan = tmp_path / "notes.nii"
    scan.write_bytes(b"not a scan")
    (target,) = client.create_study([scan])["uploads"]
    fields = {**target["fields"], "x-ignore-submit": "Upload"}
    response = httpx.post(target["url"], data=fields, files={"file": ("notes.nii", scan.read_bytes())})
    assert response.status_code == 204, response.text
    assert response.headers["location"].endswith(target["key"])
