"""S3's checks of presigned URLs and POST policies, as the local S3 endpoint makes them.

The URLs and forms are made by botocore's presigner, as the API makes them; each case changes one
thing and expects S3's refusal."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import boto3
import pytest
from botocore.config import Config
from botocore.credentials import Credentials

from infra.local.s3_auth import (
    FormUpload,
    PresignedRequest,
    S3Error,
    check_length,
    check_post_form,
    check_presigned,
    parse_query,
)

REGION = "us-east-1"
BUCKET = "ingest"
KEY = "uploads/lab-a/study-1/t1w.nii.gz"
SIGNER = Credentials("AKIASESSIONKEY000001", "session-secret")
KEYS = {SIGNER.access_key: SIGNER}
ENDPOINT = "http://127.0.0.1:8001"


def _presigner(credentials: Credentials = SIGNER) -> Any:
    return boto3.client(
        "s3",
        region_name=REGION,
        endpoint_url=ENDPOINT,
        aws_access_key_id=credentials.access_key,
        aws_secret_access_key=credentials.secret_key,
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
    )


def _now() -> datetime:
    return datetime.now(UTC)


# -- presigned URLs ------------------------------------------------------------------------------


def _presigned_get(credentials: Credentials = SIGNER, key: str = KEY, expires: int = 3600) -> str:
    return str(
        _presigner(credentials).generate_presigned_url(
            "get_object", Params={"Bucket": BUCKET, "Key": key}, ExpiresIn=expires
        )
    )


def _request(url: str, method: str = "GET", **headers: str) -> PresignedRequest:
    parts = urlsplit(url)
    return PresignedRequest(method, parts.path, parse_query(parts.query), {"host": parts.netloc, **headers})


def _replace_param(url: str, name: str, value: str) -> str:
    parts = urlsplit(url)
    query = "&".join(
        f"{pair.partition('=')[0]}={value}" if pair.startswith(f"{name}=") else pair
        for pair in parts.query.split("&")
    )
    return parts._replace(query=query).geturl()


def _backdated(url: str, days: int) -> str:
    """The URL with its date (and its credential's) `days` earlier: the signature no longer fits."""
    params = dict(parse_query(urlsplit(url).query))
    signed = datetime.strptime(params["X-Amz-Date"], "%Y%m%dT%H%M%SZ") - timedelta(days=days)
    credential = params["X-Amz-Credential"].split("/")
    credential[1] = signed.strftime("%Y%m%d")
    url = _replace_param(url, "X-Amz-Date", signed.strftime("%Y%m%dT%H%M%SZ"))
    return _replace_param(url, "X-Amz-Credential", "%2F".join(credential))


def test_a_presigned_get_passes_as_signed_and_names_its_signer():
    url = _presigned_get(key="derived/study 1/qc/preview (axial).png")
    assert check_presigned(_request(url), KEYS, REGION, _now()) is SIGNER


def test_presigned_multipart_urls_pass():
    client = _presigner()
    part = client.generate_presigned_url(
        "upload_part", Params={"Bucket": BUCKET, "Key": KEY, "UploadId": "u-1", "PartNumber": 2}
    )
    complete = client.generate_presigned_url(
        "complete_multipart_upload",
        Params={"Bucket": BUCKET, "Key": KEY, "UploadId": "u-1"},
        HttpMethod="POST",
    )
    assert check_presigned(_request(part, "PUT"), KEYS, REGION, _now()) is SIGNER
    assert check_presigned(_request(complete, "POST"), KEYS, REGION, _now()) is SIGNER


URL_CASES: dict[str, tuple[Callable[[str], PresignedRequest], int, str, str]] = {
    "another key, signature kept": (
        lambda url: _request(url.replace("t1w.nii.gz", "other.nii.gz")),
        403,
        "SignatureDoesNotMatch",
        "does not match",
    ),
    "another method": (lambda url: _request(url, "DELETE"), 403, "SignatureDoesNotMatch", "does not match"),
    "another host": (
        lambda url: _request(url.replace("127.0.0.1", "localhost")),
        403,
        "SignatureDoesNotMatch",
        "does not match",
    ),
    "a longer lifetime, signature kept": (
        lambda url: _request(_replace_param(url, "X-Amz-Expires", "604800")),
        403,
        "SignatureDoesNotMatch",
        "does not match",
    ),
    "an added parameter": (
        lambda url: _request(f"{url}&versionId=1"),
        403,
        "SignatureDoesNotMatch",
        "does not match",
    ),
    "signed with another secret of the same key": (
        lambda url: _request(_presigned_get(Credentials(SIGNER.access_key, "guessed"))),
        403,
        "SignatureDoesNotMatch",
        "does not match",
    ),
    "signed with other credentials": (
        lambda url: _request(_presigned_get(Credentials("AKIAOTHER", "other"))),
        403,
        "InvalidAccessKeyId",
        "does not exist in our records",
    ),
    "backdated past its expiry": (
        lambda url: _request(_backdated(url, days=2)),
        403,
        "AccessDenied",
        "Request has expired",
    ),
    "no signature": (
        lambda url: _request(url.partition("&X-Amz-Signature=")[0]),
        400,
        "AuthorizationQueryParametersError",
        "requires the X-Amz-Algorithm",
    ),
    "another algorithm": (
        lambda url: _request(_replace_param(url, "X-Amz-Algorithm", "AWS4-HMAC-SHA1")),
        400,
        "AuthorizationQueryParametersError",
        "only supports",
    ),
    "another region in the credential": (
        lambda url: _request(url.replace("us-east-1", "eu-west-1")),
        400,
        "AuthorizationQueryParametersError",
        "the region 'eu-west-1' is wrong",
    ),
    "a credential dated another day": (
        lambda url: _request(_replace_param(url, "X-Amz-Date", "20200101T000000Z")),
        400,
        "AuthorizationQueryParametersError",
        "Invalid credential date",
    ),
    "more than a week": (
        lambda url: _request(_replace_param(url, "X-Amz-Expires", "604801")),
        400,
        "AuthorizationQueryParametersError",
        "less than a week",
    ),
    "an unsigned x-amz header": (
        lambda url: _request(url, **{"x-amz-server-side-encryption": "AES256"}),
        403,
        "AccessDenied",
        "not signed",
    ),
    "a session token the key does not have": (
        lambda url: _request(f"{url}&X-Amz-Security-Token=stolen"),
        400,
        "InvalidToken",
        "token",
    ),
}


@pytest.mark.parametrize("case", URL_CASES, ids=list(URL_CASES))
def test_a_changed_presigned_url_is_refused(case: str):
    change, status, code, message = URL_CASES[case]
    with pytest.raises(S3Error) as refusal:
        check_presigned(change(_presigned_get()), KEYS, REGION, _now())
    assert (refusal.value.status, refusal.value.code) == (status, code)
    assert message in refusal.value.message


def test_a_presigned_url_expires_and_is_not_valid_before_its_date():
    url = _presigned_get(expires=60)
    signed_at = datetime.strptime(dict(parse_query(urlsplit(url).query))["X-Amz-Date"], "%Y%m%dT%H%M%SZ")
    signed_at = signed_at.replace(tzinfo=UTC)
    assert check_presigned(_request(url), KEYS, REGION, signed_at + timedelta(seconds=60)) is SIGNER
    for now, message in [
        (signed_at + timedelta(seconds=61), "Request has expired"),
        (signed_at - timedelta(seconds=1), "Request is not valid yet"),
    ]:
        with pytest.raises(S3Error, match=message) as refusal:
            check_presigned(_request(url), KEYS, REGION, now)
        assert refusal.value.code == "AccessDenied"


# -- POST policies -------------------------------------------------------------------------------


def _post(
    key: str = KEY,
    size: int = 1000,
    credentials: Credentials = SIGNER,
    fields: dict[str, str] | None = None,
    conditions: list[Any] | None = None,
    expires: int = 3600,
) -> dict[str, str]:
    """A presigned POST's fields, as the API hands them out (`Storage.presign_post`)."""
    post = _presigner(credentials).generate_presigned_post(
        Bucket=BUCKET,
        Key=key,
        Fields=fields,
        Conditions=[["content-length-range", size, size], *(conditions or [])],
        ExpiresIn=expires,
    )
    return dict(post["fields"])


def _check(fields: dict[str, str], bucket: str = BUCKET, filename: str = "t1w.nii.gz") -> FormUpload:
    return check_post_form(list(fields.items()), bucket, filename, KEYS, REGION, _now())


def _with_policy(fields: dict[str, str], change: Callable[[dict[str, Any]], None]) -> dict[str, str]:
    """The fields with the policy document changed and re-encoded, the signature kept."""
    document = json.loads(base64.b64decode(fields["policy"]))
    change(document)
    return {**fields, "policy": base64.b64encode(json.dumps(document).encode()).decode()}


def _widen_length_range(document: dict[str, Any]) -> None:
    document["conditions"][0] = ["content-length-range", 0, 10**9]


def test_a_form_passes_as_signed_and_is_bound_to_its_key_and_size():
    upload = _check(_post())
    assert upload.key == KEY and upload.length_range == (1000, 1000)
    check_length(upload, 1000)


def test_field_names_are_case_blind_and_x_ignore_fields_need_no_condition():
    fields = {name.upper() if name == "key" else name: value for name, value in _post().items()}
    assert _check({**fields, "x-ignore-submit": "Upload"}).key == KEY


def test_starts_with_conditions_and_filename_substitution():
    fields = _post(
        key="uploads/lab-a/${filename}",
        fields={"Content-Type": "image/png", "x-amz-meta-source": "scanner-3"},
        conditions=[
            ["starts-with", "$key", "uploads/lab-a/"],
            ["starts-with", "$Content-Type", "image/"],
            ["starts-with", "$x-amz-meta-source", ""],  # any value
        ],
    )
    upload = _check(fields, filename="scan.png")
    assert upload.key == "uploads/lab-a/scan.png"
    assert upload.fields["content-type"] == "image/png"
    with pytest.raises(S3Error, match="Policy Condition failed"):
        _check({**fields, "Content-Type": "image/png, text/html"})  # every listed type must match


FORM_CASES: dict[str, tuple[Callable[[], dict[str, str]], int, str, str]] = {
    "another tenant's key, policy kept": (
        lambda: {**_post(), "key": "uploads/lab-b/study-9/t1w.nii.gz"},
        403,
        "AccessDenied",
        'Policy Condition failed: ["eq", "$key", "uploads/lab-a/study-1/t1w.nii.gz"]',
    ),
    "another study's results.json": (
        lambda: {**_post(), "key": "derived/study-2/results.json"},
        403,
        "AccessDenied",
        "Policy Condition failed",
    ),
    "a wider length range, signature kept": (
        lambda: _with_policy(_post(), _widen_length_range),
        403,
        "SignatureDoesNotMatch",
        "does not match",
    ),
    "another key in the policy, signature kept": (
        lambda: _with_policy(
            {**_post(), "key": "derived/study-2/results.json"},
            lambda document: document["conditions"].__setitem__(2, {"key": "derived/study-2/results.json"}),
        ),
        403,
        "SignatureDoesNotMatch",
        "does not match",
    ),
    "a field the policy does not name": (
        lambda: {**_post(), "Content-Type": "text/html"},
        403,
        "AccessDenied",
        "Extra input fields: content-type",
    ),
    "a field twice": (
        lambda: {**_post(), "KEY": KEY},
        400,
        "InvalidArgument",
        "more than once",
    ),
    "no key": (
        lambda: {name: value for name, value in _post().items() if name != "key"},
        400,
        "InvalidArgument",
        "must contain a field named 'key'",
    ),
    "no signature": (
        lambda: {name: value for name, value in _post().items() if name != "x-amz-signature"},
        400,
        "InvalidArgument",
        "must contain a field named 'x-amz-signature'",
    ),
    "anonymous": (lambda: {"key": KEY}, 403, "AccessDenied", "Access Denied"),
    "signed with other credentials": (
        lambda: _post(credentials=Credentials("AKIAOTHER", "other")),
        403,
        "InvalidAccessKeyId",
        "does not exist",
    ),
    "signed with another secret of the same key": (
        lambda: _post(credentials=Credentials(SIGNER.access_key, "guessed")),
        403,
        "SignatureDoesNotMatch",
        "does not match",
    ),
    "an expired policy": (
        lambda: _post(expires=-1),
        403,
        "AccessDenied",
        "Invalid according to Policy: Policy expired.",
    ),
    "starts-with on a field that takes exact values": (
        lambda: _post(
            fields={"success_action_status": "201"},
            conditions=[["starts-with", "$success_action_status", ""]],
        ),
        403,
        "AccessDenied",
        "Policy Condition failed",
    ),
    "a simple condition with two fields": (
        lambda: _post(fields={"acl": "private"}, conditions=[{"acl": "private", "x": "y"}]),
        400,
        "InvalidPolicyDocument",
        "exactly one property",
    ),
}


@pytest.mark.parametrize("case", FORM_CASES, ids=list(FORM_CASES))
def test_a_changed_form_is_refused(case: str):
    make, status, code, message = FORM_CASES[case]
    with pytest.raises(S3Error) as refusal:
        _check(make())
    assert (refusal.value.status, refusal.value.code) == (status, code)
    assert message in refusal.value.message


def test_a_form_for_another_bucket_is_refused():
    with pytest.raises(S3Error, match=r'Policy Condition failed: \["eq", "\$bucket", "ingest"\]'):
        _check(_post(), bucket="other-bucket")


@pytest.mark.parametrize(
    ("size", "code", "detail"),
    [
        (1001, "EntityTooLarge", {"MaxSizeAllowed": "1000"}),
        (999, "EntityTooSmall", {"MinSizeAllowed": "1000"}),
    ],
)
def test_a_file_outside_the_length_range_is_refused(size: int, code: str, detail: dict[str, str]):
    with pytest.raises(S3Error) as refusal:
        check_length(_check(_post()), size)
    assert (refusal.value.status, refusal.value.code) == (400, code)
    assert refusal.value.details == {"ProposedSize": str(size), **detail}
