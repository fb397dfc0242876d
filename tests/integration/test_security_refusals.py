"""Requests the API refuses whatever its state: malformed and powerless tokens, study ids that
cannot be ours, webhook URLs to internal addresses. The app runs as the API function against the
local cloud, as in test_security.py; none of these requests changes anything, so the module's
tests share one cloud (a cloud a test costs about a second, and there are some sixty of them).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Iterator
from typing import Any

import jwt
import pytest
from fastapi.testclient import TestClient

from infra.local.serve import acting_as
from tests.fixtures.cloud import checked_cloud
from voxelpipe.api.app import create_app
from voxelpipe.api.auth import DEV_ISSUER, DEV_SECRET_FILE_ENV, Role, dev_secret, mint_dev_token
from voxelpipe.function_specs import API
from voxelpipe.wiring import EnvVar

CALLER = "lab-a"


@pytest.fixture(scope="module")
def api(template: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    with checked_cloud(template) as cloud, pytest.MonkeyPatch.context() as patch:
        patch.setenv(EnvVar.AUTH_MODE, "dev")
        # The session's secret, as the per-test fixture sets it (tests/conftest.py).
        patch.setenv(DEV_SECRET_FILE_ENV, str(tmp_path_factory.getbasetemp() / "dev-token-secret"))
        # Requests act as the API function: its role's policies hold them (infra/local/iam.py).
        with TestClient(acting_as(cloud, API.name, create_app())) as client:
            yield client


def auth(role: Role, tenant: str = CALLER) -> dict[str, str]:
    return {"authorization": f"Bearer {mint_dev_token(tenant, role)}"}


def token(claims: dict[str, Any], *, key: str | None = None, algorithm: str = "HS256") -> dict[str, str]:
    """A bearer token carrying exactly `claims`, signed with the development secret (or `key`)."""
    signed = jwt.encode(claims, dev_secret(create=True) if key is None else key, algorithm=algorithm)
    return {"authorization": f"Bearer {signed}"}


def good_claims(**changes: Any) -> dict[str, Any]:
    now = int(time.time())
    claims = {
        "iss": DEV_ISSUER,
        "sub": "attacker",
        "iat": now,
        # A day: MALFORMED_TOKENS builds its claims when the tests are collected, and a busy
        # machine reaches these tests more than ten minutes later (they failed as expired).
        "exp": now + 24 * 3600,
        "custom:tenant": CALLER,
        "cognito:groups": ["admin"],
    }
    claims.update(changes)
    return {name: value for name, value in claims.items() if value is not REMOVED}


REMOVED = object()


@pytest.mark.parametrize(
    "study_id",
    ["x" * 3000, "ABCDEF0123456789", "..%2F..%2Fetc", "a" * 31 + "%0A", "0" * 32 + "%00"],
)
def test_study_ids_that_cannot_be_ours_are_404(api: TestClient, study_id: str):
    response = api.get(f"/studies/{study_id}", headers=auth(Role.ADMIN))
    assert response.status_code == 404 and response.json()["code"] in ("study_not_found", "not_found")


def _unsigned(payload: bytes) -> str:
    """A JWT whose payload is `payload` as is (not an object, say), signed with the dev secret."""
    header = base64.urlsafe_b64encode(b'{"alg":"HS256","typ":"JWT"}').rstrip(b"=")
    body = base64.urlsafe_b64encode(payload).rstrip(b"=")
    mac = hmac.new(dev_secret(create=True).encode(), header + b"." + body, hashlib.sha256).digest()
    return (header + b"." + body + b"." + base64.urlsafe_b64encode(mac).rstrip(b"=")).decode()


LONG = "a" * 300
MALFORMED_TOKENS: list[tuple[str, Any, int, str]] = [
    # (what, headers or claims, status, what the detail names)
    ("no header", {}, 401, "Bearer"),
    ("basic scheme", {"authorization": "Basic YTpi"}, 401, "Bearer"),
    ("empty bearer", {"authorization": "Bearer "}, 401, "Bearer"),
    ("not a jwt", {"authorization": "Bearer not-a-token"}, 401, "segments"),
    ("payload not an object", "payload", 401, "json object"),
    ("alg none", "none", 401, "alg"),
    ("wrong key", "wrong-key", 401, "Signature"),
    ("another algorithm", "hs512", 401, "alg"),
    ("missing exp", good_claims(exp=REMOVED), 401, "exp"),
    ("missing iat", good_claims(iat=REMOVED), 401, "iat"),
    ("missing iss", good_claims(iss=REMOVED), 401, "iss"),
    ("missing sub", good_claims(sub=REMOVED), 401, "sub"),
    ("another issuer", good_claims(iss="evil"), 401, "issuer"),
    ("expired", good_claims(exp=int(time.time()) - 10), 401, "expired"),
    ("exp not a number", good_claims(exp="tomorrow"), 401, "exp"),
    ("issued in the future", good_claims(iat=int(time.time()) + 3600), 401, "iat"),
    ("sub an integer", good_claims(sub=5), 401, "sub"),
    ("groups an integer", good_claims(**{"cognito:groups": 1}), 401, "cognito:groups"),
    ("groups an object", good_claims(**{"cognito:groups": {"admin": 1}}), 401, "cognito:groups"),
    ("groups a nested list", good_claims(**{"cognito:groups": [["admin"]]}), 401, "cognito:groups"),
    ("groups space-separated", good_claims(**{"cognito:groups": "[admin viewer]"}), 401, "cognito:groups"),
    ("groups unbalanced", good_claims(**{"cognito:groups": "[admin"}), 401, "cognito:groups"),
    ("groups none of ours", good_claims(**{"cognito:groups": ["staff"]}), 403, "cognito:groups"),
    ("groups empty", good_claims(**{"cognito:groups": []}), 403, "cognito:groups"),
    ("groups missing", good_claims(**{"cognito:groups": REMOVED}), 403, "cognito:groups"),
    ("tenant a list", good_claims(**{"custom:tenant": ["lab-a"]}), 401, "custom:tenant"),
    ("tenant an integer", good_claims(**{"custom:tenant": 7}), 401, "custom:tenant"),
    ("tenant missing", good_claims(**{"custom:tenant": REMOVED}), 403, "custom:tenant"),
    *[
        (f"tenant {tenant!r}", good_claims(**{"custom:tenant": tenant}), 403, "custom:tenant")
        for tenant in [
            "",
            "Acme",
            "acme_corp",
            "acme.org",
            "a b",
            "../a",
            "a/b",
            "a/0123456789abcdef0123456789abcdef",
            "-lab",
            "lab-a\n",
            LONG,
            "l\u0430b-a",  # a Cyrillic a
            "\uff4c\uff41\uff42",  # full-width letters
            "lab\u200ba",  # a zero-width space
        ]
    ],
]


@pytest.mark.parametrize(
    ("what", "given", "status", "named"), MALFORMED_TOKENS, ids=[c[0] for c in MALFORMED_TOKENS]
)
def test_malformed_tokens_are_401_and_tokens_without_access_403(
    api: TestClient, what: str, given: Any, status: int, named: str
):
    dev_secret(create=True)  # this machine issued development tokens, whichever test ran first
    if given == "payload":
        headers = {"authorization": f"Bearer {_unsigned(b'[1]')}"}
    elif given == "none":
        headers = token(good_claims(), key="", algorithm="none")
    elif given == "wrong-key":
        headers = token(good_claims(), key="not-the-secret-of-this-machine-0123456789")
    elif given == "hs512":
        headers = token(good_claims(), algorithm="HS512")
    elif "authorization" in given or not given:
        headers = given
    else:
        headers = token(given)
    for method, path in (("GET", "/studies"), ("GET", "/models"), ("POST", "/studies")):
        body = {"files": [{"name": "scan.nii.gz", "size": 10}]} if method == "POST" else None
        response = api.request(method, path, headers=headers, json=body)
        problem = response.json()
        assert response.status_code == status, (what, path, problem)
        assert problem["code"] == ("unauthenticated" if status == 401 else "forbidden"), (what, problem)
        assert named.lower() in (problem.get("detail") or "").lower(), (what, problem)


def test_api_gateway_string_forms_of_groups_are_accepted(api: TestClient):
    for groups in ("[admin, viewer]", "viewer,admin", "admin", ["viewer", "admin", "staff"]):
        response = api.delete("/models/none-such", headers=token(good_claims(**{"cognito:groups": groups})))
        assert response.json()["code"] == "model_not_found", groups  # the admin role, from any form


@pytest.mark.parametrize(
    "url",
    [
        "https://169.254.169.254/latest/meta-data/iam/security-credentials/",
        "https://10.0.0.5:8443/hook",
        "https://localhost:8443/hook",
        "https://127.0.0.1/hook",
        "https://[::1]/hook",
        "https://[::ffff:169.254.169.254]/",
        "https://2852039166/",  # 169.254.169.254 as one number
        "https://0xa9fea9fe/",
        "https://0251.0376.0251.0376/",
        "https://user:pass@hooks.example.org/",
        "http://hooks.example.org/hook",
        "http://169.254.169.254/",  # development's http exception is for this machine's names only
    ],
)
def test_webhook_urls_to_internal_addresses_are_refused_at_registration(api: TestClient, url: str):
    body = {"files": [{"name": "a.nii", "size": 9}], "webhook_url": url}
    response = api.post("/studies", json=body, headers=auth(Role.UPLOADER))
    assert response.status_code == 422, response.text
    assert [e["field"] for e in response.json()["errors"]] == ["webhook_url"]
