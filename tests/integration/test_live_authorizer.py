"""The WebSocket API's $connect authorizer as AWS runs it: Cognito ID tokens verified against the
user pool's JWKS (served here over HTTP, as Cognito serves it), viewer grants against the
deployment's secret (moto's Secrets Manager)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import boto3
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from infra.local.cloud import LocalCloud
from voxelpipe.adapters import cognito_tokens
from voxelpipe.live import LiveCaller
from voxelpipe.viewer_grants import grant_key, issue_grant
from voxelpipe.wiring import EnvVar

KEY_ID = "test-key"
METHOD_ARN = "arn:aws:execute-api:us-east-1:123456789012:abc123/v1/$connect"


@pytest.fixture(scope="module")
def signing_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def jwks(signing_key: rsa.RSAPrivateKey, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The user pool's JWKS, served over HTTP; the authorizer's key client fetches it from there."""
    public = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(signing_key.public_key()))
    body = json.dumps({"keys": [{**public, "kid": KEY_ID, "use": "sig", "alg": "RS256"}]}).encode()

    class Keys(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Keys)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    local = jwt.PyJWKClient(f"http://127.0.0.1:{server.server_port}/jwks.json")
    monkeypatch.setattr(cognito_tokens, "_keys", lambda url: local)
    yield
    server.shutdown()


def _id_token(key: rsa.RSAPrivateKey, **claims: Any) -> str:
    now = int(time.time())
    issuer = cognito_tokens._issuer()
    base = {
        "iss": issuer,
        "aud": cognito_tokens.os.environ[EnvVar.USER_POOL_CLIENT_ID],
        "sub": "ana",
        "iat": now,
        "exp": now + 600,
        "token_use": "id",
        "custom:tenant": "lab-a",
        "cognito:groups": ["viewer"],
    }
    return jwt.encode({**base, **claims}, key, algorithm="RS256", headers={"kid": KEY_ID})


def _connect(cloud: LocalCloud, token: str | None) -> dict[str, Any]:
    event = {
        "type": "REQUEST",
        "methodArn": METHOD_ARN,
        "queryStringParameters": {"token": token} if token is not None else {},
        "requestContext": {"routeKey": "$connect", "eventType": "CONNECT", "connectionId": "c1"},
    }
    payload, error = cloud.invoke("live_authorizer", event)
    assert error is None, payload
    return dict(payload)


def _effect(answer: dict[str, Any]) -> str:
    (statement,) = answer["policyDocument"]["Statement"]
    assert statement["Resource"] == METHOD_ARN
    return str(statement["Effect"])


def test_a_cognito_id_token_of_the_pool_is_allowed_with_its_identity(
    cloud: LocalCloud, jwks: None, signing_key: rsa.RSAPrivateKey
):
    answer = _connect(cloud, _id_token(signing_key))
    assert _effect(answer) == "Allow"
    caller = LiveCaller.from_context(answer["context"])
    assert (caller.tenant, caller.subject, caller.role, caller.grant_study_id) == (
        "lab-a",
        "ana",
        "viewer",
        None,
    )


# Tokens the API would refuse, each with one claim changed (one cloud for all: they are quick).
REFUSED_CLAIMS: dict[str, dict[str, Any]] = {
    "expired": {"exp": int(time.time()) - 10},
    "audience": {"aud": "another-app-client"},
    "issuer": {"iss": "https://cognito-idp.us-east-1.amazonaws.com/another-pool"},
    "access-token": {"token_use": "access"},  # an access token is not an ID token
    "tenant": {"custom:tenant": "Not A Tenant"},  # the REST API's claim checks
    "role": {"cognito:groups": ["staff"]},
}


def test_a_token_the_api_would_refuse_is_denied(
    cloud: LocalCloud, jwks: None, signing_key: rsa.RSAPrivateKey
):
    effects = {
        name: _effect(_connect(cloud, _id_token(signing_key, **claims)))
        for name, claims in REFUSED_CLAIMS.items()
    }
    assert effects == dict.fromkeys(REFUSED_CLAIMS, "Deny")


def test_a_token_signed_with_another_key_or_none_is_denied(cloud: LocalCloud, jwks: None):
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    assert _effect(_connect(cloud, _id_token(stranger))) == "Deny"
    assert _effect(_connect(cloud, None)) == "Deny"
    assert _effect(_connect(cloud, "not-a-jwt")) == "Deny"


def test_a_viewer_grant_is_allowed_with_its_scope(cloud: LocalCloud):
    secret = boto3.client("secretsmanager").get_secret_value(SecretId=cloud.env(EnvVar.WEBHOOK_SECRET_ARN))
    key = grant_key(secret["SecretString"].encode())
    token, grant = issue_grant(key, tenant="lab-a", issued_to="ana", study_id="a" * 32)
    answer = _connect(cloud, token)
    assert _effect(answer) == "Allow"
    caller = LiveCaller.from_context(answer["context"])
    assert (caller.tenant, caller.role, caller.grant_study_id, caller.expires_at) == (
        "lab-a",
        None,
        grant.study_id,
        grant.expires_at,
    )
    expired, _ = issue_grant(key, tenant="lab-a", issued_to="ana", study_id="a" * 32, now=time.time() - 7200)
    assert _effect(_connect(cloud, expired)) == "Deny"
