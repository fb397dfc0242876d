"""Presigned URLs in a private deployment name the S3 interface endpoint (docs/security.md,
"Network modes"): the API's presigner signs for the endpoint URL CDK sets in
EnvVar.S3_PUBLIC_ENDPOINT (multipart parts use the same presigner)."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest

from voxelpipe.adapters.storage import Storage
from voxelpipe.wiring import EnvVar

ENDPOINT = "https://bucket.vpce-0a1b2c3d4e5f60718-abcdefgh.s3.eu-west-1.vpce.amazonaws.com"
HOST = urlsplit(ENDPOINT).netloc
BUCKET = "voxelpipe-ingestbucket-1a2b3c"


@pytest.fixture
def private_presigner(monkeypatch: pytest.MonkeyPatch) -> Storage:
    monkeypatch.setenv(EnvVar.S3_PUBLIC_ENDPOINT, ENDPOINT)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAEXAMPLEEXAMPLE00")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret-example")
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    return Storage(BUCKET)


def test_downloads_are_signed_for_the_endpoint(private_presigner: Storage):
    url = urlsplit(private_presigner.presign_get("derived/s-1/report.pdf", 300))
    assert url.scheme == "https" and url.netloc == HOST
    assert url.path == f"/{BUCKET}/derived/s-1/report.pdf"
    query = parse_qs(url.query)
    assert query["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"]
    assert "/eu-west-1/s3/aws4_request" in query["X-Amz-Credential"][0]
    assert query["X-Amz-SignedHeaders"] == ["host"]  # the endpoint's name is what is signed


def test_form_uploads_go_to_the_endpoint(private_presigner: Storage):
    post = private_presigner.presign_post("uploads/acme/s-1/00000.nii.gz", 1024, 300)
    assert urlsplit(post["url"]).netloc == HOST and urlsplit(post["url"]).path == f"/{BUCKET}"
    assert post["fields"]["key"] == "uploads/acme/s-1/00000.nii.gz"
