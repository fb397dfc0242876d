"""What S3 checks before it acts on a presigned request: SigV4 query signatures and POST policies.

Pure logic over a request's parts (no network, no moto), so that the local S3 gateway
(`infra/local/s3_gateway.py`) refuses what S3 refuses, and unit tests can show it case by case.
Signatures are recomputed with botocore's own SigV4 signers, the code that made them, rather than
a second implementation of the algorithm. A refusal is an `S3Error`: S3's status, code, message
and the extra elements S3 puts in its XML answer.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote, unquote

from botocore.auth import SIGV4_TIMESTAMP, S3SigV4PostAuth, S3SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.utils import percent_encode

ALGORITHM = "AWS4-HMAC-SHA256"
SERVICE = "s3"
MAX_EXPIRES_S = 7 * 24 * 3600  # a presigned URL lives at most a week
MAX_FIELD_BYTES = 20 * 1024  # S3's limit on a POST form's fields before the file

# Access key id -> the credentials it stands for: the keys whose signatures are accepted.
Keys = Mapping[str, Credentials]

QUERY_AUTH = (
    "X-Amz-Algorithm",
    "X-Amz-Credential",
    "X-Amz-Signature",
    "X-Amz-Date",
    "X-Amz-SignedHeaders",
    "X-Amz-Expires",
)
SECURITY_TOKEN = "X-Amz-Security-Token"

# The POST form's SigV4 fields (names compared lower-cased: S3's form field names are case-blind).
FORM_AUTH = ("x-amz-algorithm", "x-amz-credential", "x-amz-date", "x-amz-signature")
# Fields a policy need not mention; every other field needs a condition.
UNCONDITIONED = frozenset({"x-amz-signature", "file", "policy"})
# Fields a `starts-with` condition may constrain (besides x-amz-meta-*); the rest take exact values.
STARTS_WITH = frozenset(
    {
        "key",
        "acl",
        "cache-control",
        "content-type",
        "content-disposition",
        "content-encoding",
        "expires",
        "success_action_redirect",
        "redirect",
    }
)


class S3Error(Exception):
    """One of S3's refusals: HTTP status, error code, message, and the extra elements it sends."""

    def __init__(self, status: int, code: str, message: str, **details: object) -> None:
        super().__init__(f"{code}: {message}")
        self.status, self.code, self.message = status, code, message
        self.details = {name.replace("_", "-"): str(value) for name, value in details.items()}


def access_denied(message: str = "Access Denied", **details: object) -> S3Error:
    return S3Error(403, "AccessDenied", message, **details)


def _signature_mismatch(access_key: str, string_to_sign: str, provided: str, **details: str) -> S3Error:
    return S3Error(
        403,
        "SignatureDoesNotMatch",
        "The request signature we calculated does not match the signature you provided. "
        "Check your key and signing method.",
        AWSAccessKeyId=access_key,
        StringToSign=string_to_sign,
        SignatureProvided=provided,
        **details,
    )


def parse_query(raw: str) -> list[tuple[str, str]]:
    """A raw query string's parameters, in order, percent-decoded ('+' stays '+': SigV4 encodes a
    space as %20, so reading '+' as a space would change what was signed)."""
    pairs = (pair.partition("=") for pair in raw.split("&") if pair)
    return [(unquote(name), unquote(value)) for name, _, value in pairs]


def _parse_amz_date(value: str, code: str, name: str) -> datetime:
    try:
        return datetime.strptime(value, SIGV4_TIMESTAMP).replace(tzinfo=UTC)
    except ValueError:
        raise S3Error(
            400, code, f"{name} must be in the ISO8601 Long Format \"yyyyMMdd'T'HHmmss'Z'\""
        ) from None


def _signer(credential: str, amz_date: str, keys: Keys, region: str, code: str) -> Credentials:
    """The credentials a `<key id>/<date>/<region>/s3/aws4_request` credential names, once its scope
    is checked against the request's date and this endpoint's region and service."""
    parts = credential.split("/")
    if len(parts) != 5:
        raise S3Error(
            400,
            code,
            "Error parsing the X-Amz-Credential parameter; the Credential is mal-formed; "
            'expecting "<YOUR-AKID>/YYYYMMDD/REGION/SERVICE/aws4_request".',
        )
    access_key, date, scope_region, service, terminal = parts
    credentials = keys.get(access_key)
    if credentials is None:
        raise S3Error(
            403,
            "InvalidAccessKeyId",
            "The AWS Access Key Id you provided does not exist in our records.",
            AWSAccessKeyId=access_key,
        )
    if date != amz_date[:8]:
        raise S3Error(
            400,
            code,
            f'Invalid credential date "{date}". This date is not the same as X-Amz-Date: "{amz_date[:8]}".',
        )
    if scope_region != region:
        raise S3Error(
            400,
            code,
            f"Error parsing the X-Amz-Credential parameter; the region '{scope_region}' is wrong; "
            f"expecting '{region}'",
            Region=region,
        )
    if service != SERVICE:
        raise S3Error(
            400,
            code,
            f'Error parsing the X-Amz-Credential parameter; incorrect service "{service}". '
            f'This endpoint belongs to "{SERVICE}".',
        )
    if terminal != "aws4_request":
        raise S3Error(
            400,
            code,
            f'Error parsing the X-Amz-Credential parameter; incorrect terminal "{terminal}". '
            'This endpoint uses "aws4_request".',
        )
    return credentials


def _check_token(credentials: Credentials, token: str | None) -> None:
    if token != credentials.token:
        raise S3Error(400, "InvalidToken", "The provided token is malformed or otherwise invalid.")


# -- presigned URLs (SigV4 query authentication) -----------------------------------------------


@dataclass(frozen=True)
class PresignedRequest:
    """What a presigned request's signature covers."""

    method: str
    path: str  # as sent: percent-encoded
    query: Sequence[tuple[str, str]]  # decoded, in order (parse_query)
    headers: Mapping[str, str]  # names lower-cased; repeated headers joined with ","


def is_presigned(query: Sequence[tuple[str, str]]) -> bool:
    return any(name in QUERY_AUTH for name, _ in query)


def check_presigned(request: PresignedRequest, keys: Keys, region: str, now: datetime) -> Credentials:
    """The signer's credentials, if S3 would accept this presigned request; else S3's refusal."""
    code = "AuthorizationQueryParametersError"
    params = dict(request.query)
    if any(name not in params for name in QUERY_AUTH):
        raise S3Error(
            400,
            code,
            "Query-string authentication version 4 requires the X-Amz-Algorithm, X-Amz-Credential, "
            "X-Amz-Signature, X-Amz-Date, X-Amz-SignedHeaders, and X-Amz-Expires parameters.",
        )
    if params["X-Amz-Algorithm"] != ALGORITHM:
        raise S3Error(400, code, f'X-Amz-Algorithm only supports "{ALGORITHM}"')
    amz_date = params["X-Amz-Date"]
    signed_at = _parse_amz_date(amz_date, code, "X-Amz-Date")
    credentials = _signer(params["X-Amz-Credential"], amz_date, keys, region, code)
    try:
        expires = int(params["X-Amz-Expires"])
    except ValueError:
        raise S3Error(400, code, "X-Amz-Expires should be a number") from None
    if expires < 0:
        raise S3Error(400, code, "X-Amz-Expires must be non-negative")
    if expires > MAX_EXPIRES_S:
        raise S3Error(
            400, code, f"X-Amz-Expires must be less than a week (in seconds) that is; {MAX_EXPIRES_S}"
        )
    _check_token(credentials, params.get(SECURITY_TOKEN))
    # Time before signature, as S3: an expired URL says so whatever else is wrong with it.
    if now < signed_at:
        raise access_denied("Request is not valid yet")
    if now > signed_at + timedelta(seconds=expires):
        raise access_denied(
            "Request has expired",
            X_Amz_Expires=expires,
            Expires=(signed_at + timedelta(seconds=expires)).strftime("%Y-%m-%dT%H:%M:%SZ"),
            ServerTime=now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        )
    signed = [name.strip().lower() for name in params["X-Amz-SignedHeaders"].split(";")]
    # An x-amz- header the signature does not cover would change the request unchecked.
    unsigned = sorted(name for name in request.headers if name.startswith("x-amz-") and name not in signed)
    if unsigned:
        raise access_denied(
            "There were headers present in the request which were not signed",
            HeadersNotSigned=", ".join(unsigned),
        )
    # The request as the signer saw it: S3's canonical path and query (encoded as botocore encodes
    # them; every parameter but the signature, repeats too) and the signed headers.
    path = quote(unquote(request.path), safe="/~")
    query = "&".join(
        f"{percent_encode(name)}={percent_encode(value)}"
        for name, value in request.query
        if name != "X-Amz-Signature"
    )
    aws_request = AWSRequest(
        method=request.method,
        url=f"http://{request.headers.get('host', '')}{path}?{query}",
        headers={name: request.headers[name] for name in signed if name in request.headers},
    )
    aws_request.context["timestamp"] = amz_date
    signer = S3SigV4QueryAuth(credentials, SERVICE, region, expires=expires)
    canonical_request = signer.canonical_request(aws_request)
    string_to_sign = signer.string_to_sign(aws_request, canonical_request)
    provided = params["X-Amz-Signature"]
    if not hmac.compare_digest(signer.signature(string_to_sign, aws_request), provided):
        raise _signature_mismatch(
            credentials.access_key, string_to_sign, provided, CanonicalRequest=canonical_request
        )
    return credentials


# -- POST forms (SigV4 POST policies) ------------------------------------------------------------


@dataclass(frozen=True)
class FormUpload:
    """A form S3 accepted, but for its file's size: what to write, and the size it must have."""

    key: str
    fields: Mapping[str, str]  # names lower-cased
    length_range: tuple[int, int] | None


def _invalid_policy(message: str) -> S3Error:
    return S3Error(400, "InvalidPolicyDocument", f"Invalid Policy: {message}")


def _missing_field(name: str) -> S3Error:
    return S3Error(
        400,
        "InvalidArgument",
        f"Bucket POST must contain a field named '{name}'.  If it is specified, please check the order "
        "of the fields.",
        ArgumentName=name,
        ArgumentValue="",
    )


def _decoded_policy(policy: str) -> dict[str, Any]:
    try:
        document = json.loads(base64.b64decode(policy, validate=True))
    except (binascii.Error, ValueError):
        raise _invalid_policy("Invalid JSON.") from None
    if not isinstance(document, dict):
        raise _invalid_policy("Invalid JSON.")
    return document


def _expiration(document: Mapping[str, Any]) -> datetime:
    value = document.get("expiration")
    if not isinstance(value, str):
        raise _invalid_policy("Policy missing expiration.")
    try:
        expiration = datetime.fromisoformat(value)
    except ValueError:
        raise _invalid_policy(f"Invalid 'expiration' value: '{value}'") from None
    return expiration if expiration.tzinfo else expiration.replace(tzinfo=UTC)


def _condition(condition: Any) -> list[Any]:
    """A condition as `[operation, "$field", value]` or `["content-length-range", min, max]`."""
    if isinstance(condition, dict):
        if len(condition) != 1:
            raise _invalid_policy(
                "Invalid Simple-Condition: Simple-Conditions must have exactly one property specified."
            )
        ((name, value),) = condition.items()
        return ["eq", f"${name}", value]
    if not isinstance(condition, list) or len(condition) != 3 or not isinstance(condition[0], str):
        raise _invalid_policy(f"Invalid Condition: {json.dumps(condition)}")
    operation = condition[0].lower()
    if operation == "content-length-range":
        low, high = condition[1:]
        if not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in (low, high)):
            raise _invalid_policy("Invalid content-length-range: both bounds must be non-negative integers.")
        return [operation, low, high]
    field, value = condition[1:]
    if operation not in ("eq", "starts-with") or not isinstance(field, str) or not field.startswith("$"):
        raise _invalid_policy(f"Invalid Condition: {json.dumps(condition)}")
    if not isinstance(value, str):
        raise _invalid_policy(f"Invalid Condition: {json.dumps(condition)}")
    return [operation, field, value]


def _holds(operation: str, field: str, value: str, expected: str) -> bool:
    if operation == "eq":
        return value == expected
    if field not in STARTS_WITH and not field.startswith("x-amz-meta-"):
        return False  # S3 takes only exact values for bucket, success_action_status, x-amz-*
    if field == "content-type":  # a list of types: each must match
        return all(part.strip().startswith(expected) for part in value.split(","))
    return value.startswith(expected)


def check_post_form(
    fields: Sequence[tuple[str, str]], bucket: str, filename: str, keys: Keys, region: str, now: datetime
) -> FormUpload:
    """The upload a form's fields (those before its file) ask for, if its policy allows it as S3
    would; else S3's refusal. The file's size is checked once it is read (`check_length`)."""
    form: dict[str, str] = {}
    for name, value in fields:
        name = name.lower()
        if name in form:  # one value for the check and the write: no second one to slip by
            raise S3Error(400, "InvalidArgument", f"The form field '{name}' is given more than once.")
        form[name] = value
    if "key" not in form:
        raise _missing_field("key")
    if not any(name in form for name in (*FORM_AUTH, "policy")):
        raise access_denied()  # anonymous: the bucket is private
    for name in (*FORM_AUTH, "policy"):
        if name not in form:
            raise _missing_field(name)
    if form["x-amz-algorithm"] != ALGORITHM:
        raise S3Error(400, "InvalidArgument", f'X-Amz-Algorithm only supports "{ALGORITHM}"')
    amz_date = form["x-amz-date"]
    _parse_amz_date(amz_date, "InvalidArgument", "X-Amz-Date")
    credentials = _signer(form["x-amz-credential"], amz_date, keys, region, "InvalidArgument")
    _check_token(credentials, form.get("x-amz-security-token"))
    # The signature covers the base64 policy text, with the SigV4 key of the credential's scope.
    signing = AWSRequest()
    signing.context["timestamp"] = amz_date
    signature = S3SigV4PostAuth(credentials, SERVICE, region).signature(form["policy"], signing)
    if not hmac.compare_digest(signature, form["x-amz-signature"]):
        raise _signature_mismatch(credentials.access_key, form["policy"], form["x-amz-signature"])
    document = _decoded_policy(form["policy"])
    if now > _expiration(document):
        raise access_denied("Invalid according to Policy: Policy expired.")
    conditions = document.get("conditions", [])
    if not isinstance(conditions, list):
        raise _invalid_policy("Invalid 'conditions' value: must be a list.")
    # The bucket is the request's, and `${filename}` in the key is the file's name.
    key = form["key"].replace("${filename}", filename)
    values = {**form, "bucket": bucket, "key": key}
    covered: set[str] = set()
    length_range: tuple[int, int] | None = None
    for condition in map(_condition, conditions):
        operation, subject, expected = condition
        if operation == "content-length-range":
            length_range = (subject, expected)
            continue
        field = subject[1:].lower()
        covered.add(field)
        if not _holds(operation, field, values.get(field, ""), expected):
            raise access_denied(
                f"Invalid according to Policy: Policy Condition failed: {json.dumps(condition)}"
            )
    extra = [
        name
        for name in form
        if name not in covered and name not in UNCONDITIONED and not name.startswith("x-ignore-")
    ]
    if extra:
        raise access_denied(f"Invalid according to Policy: Extra input fields: {', '.join(extra)}")
    return FormUpload(key=key, fields=form, length_range=length_range)


def check_length(upload: FormUpload, size: int) -> None:
    """S3's refusal of a file outside the policy's content-length-range."""
    if upload.length_range is None:
        return
    low, high = upload.length_range
    if size > high:
        raise S3Error(
            400,
            "EntityTooLarge",
            "Your proposed upload exceeds the maximum allowed size",
            ProposedSize=size,
            MaxSizeAllowed=high,
        )
    if size < low:
        raise S3Error(
            400,
            "EntityTooSmall",
            "Your proposed upload is smaller than the minimum allowed size",
            ProposedSize=size,
            MinSizeAllowed=low,
        )
