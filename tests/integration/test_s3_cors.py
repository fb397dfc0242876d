"""The local S3 endpoint answers CORS as S3 does, from the bucket's CORS configuration: the stack's
rule (GET and HEAD from any origin) lets the viewer's pages read presigned volumes; without a rule,
no CORS headers and preflights refused, as in AWS."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import boto3
import pytest
from botocore.config import Config
from fastapi.testclient import TestClient

from infra.local.cloud import LocalCloud
from infra.local.deploy import REGION
from infra.local.s3_gateway import S3Gateway
from infra.local.serve import session_credentials
from voxelpipe.function_specs import API

ORIGIN = "http://127.0.0.1:8000"
KEY = "derived/00000000000000000000000000/tissue-seg/labels.nii.gz"


@dataclass(frozen=True)
class Endpoint:
    client: TestClient
    url: str  # a presigned GET of KEY
    bucket: str


@pytest.fixture
def s3(cloud: LocalCloud) -> Iterator[Endpoint]:
    credentials = session_credentials()
    gateway = S3Gateway(
        keys={credentials.access_key: credentials},
        region=REGION,
        client=boto3.client("s3", region_name=REGION),
        acting=lambda: cloud.acting_as(API.name),
    )
    boto3.client("s3", region_name=REGION).put_object(Bucket=cloud.bucket, Key=KEY, Body=b"labels")
    presigner = boto3.client(
        "s3",
        region_name=REGION,
        endpoint_url="http://testserver",
        aws_access_key_id=credentials.access_key,
        aws_secret_access_key=credentials.secret_key,
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
    )
    url = presigner.generate_presigned_url("get_object", Params={"Bucket": cloud.bucket, "Key": KEY})
    yield Endpoint(TestClient(gateway), url, cloud.bucket)  # no lifespan: the gateway has none


def test_the_stack_s_rule_reaches_the_local_bucket(s3: Endpoint):
    rules = boto3.client("s3", region_name=REGION).get_bucket_cors(Bucket=s3.bucket)["CORSRules"]
    assert [(r["AllowedMethods"], r["AllowedOrigins"]) for r in rules] == [(["GET", "HEAD"], ["*"])]


def test_a_presigned_get_from_another_origin_carries_cors_headers(s3: Endpoint):
    response = s3.client.get(s3.url, headers={"origin": ORIGIN})
    assert response.status_code == 200 and response.content == b"labels"
    assert response.headers["access-control-allow-origin"] == "*"
    assert response.headers["access-control-allow-methods"] == "GET, HEAD"
    assert "Content-Range" in response.headers["access-control-expose-headers"]
    # Without an Origin (not a browser's cross-origin request): no CORS headers.
    assert "access-control-allow-origin" not in s3.client.get(s3.url).headers


def test_a_preflight_is_answered_from_the_rules(s3: Endpoint):
    allowed = s3.client.options(
        s3.url,
        headers={
            "origin": ORIGIN,
            "access-control-request-method": "GET",
            "access-control-request-headers": "range",
        },
    )
    assert allowed.status_code == 200, allowed.text
    assert allowed.headers["access-control-allow-origin"] == "*"
    assert allowed.headers["access-control-allow-headers"] == "range"
    assert allowed.headers["access-control-max-age"] == "3600"
    refused = s3.client.options(s3.url, headers={"origin": ORIGIN, "access-control-request-method": "PUT"})
    assert refused.status_code == 403 and "<Code>AccessForbidden</Code>" in refused.text
    assert "access-control-allow-origin" not in refused.headers
    no_origin = s3.client.options(s3.url, headers={"access-control-request-method": "GET"})
    assert no_origin.status_code == 400


def test_a_bucket_without_cors_answers_none(s3: Endpoint):
    boto3.client("s3", region_name=REGION).delete_bucket_cors(Bucket=s3.bucket)
    response = s3.client.get(s3.url, headers={"origin": ORIGIN})
    assert response.status_code == 200  # served, but the browser refuses it: no CORS headers
    assert not any(name.startswith("access-control-") for name in response.headers)
    preflight = s3.client.options(s3.url, headers={"origin": ORIGIN, "access-control-request-method": "GET"})
    assert preflight.status_code == 403 and "CORS is not enabled for this bucket" in preflight.text


def test_a_rule_for_one_origin_answers_only_it(s3: Endpoint):
    boto3.client("s3", region_name=REGION).put_bucket_cors(
        Bucket=s3.bucket,
        CORSConfiguration={
            "CORSRules": [{"AllowedMethods": ["GET"], "AllowedOrigins": ["https://*.example.org"]}]
        },
    )
    allowed = s3.client.get(s3.url, headers={"origin": "https://viewer.example.org"})
    assert allowed.headers["access-control-allow-origin"] == "https://viewer.example.org"
    assert "origin" in allowed.headers["vary"].lower()
    other = s3.client.get(s3.url, headers={"origin": "https://evil.example.com"})
    assert "access-control-allow-origin" not in other.headers
