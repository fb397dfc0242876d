"""Webhook signing and verification, URL checks, retry backoff."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from voxelpipe.status_events import StudyStatusChanged
from voxelpipe.webhooks import (
    InvalidWebhookUrl,
    body_of,
    check_webhook_url,
    retry_delay_s,
    signature,
    study_key,
    verify,
)

SECRET = b"deployment-secret"
NOW = 1_795_000_000


def test_study_keys_differ_per_study_and_per_deployment():
    assert study_key(SECRET, "a") != study_key(SECRET, "b")
    assert study_key(SECRET, "a") != study_key(b"another deployment", "a")
    assert study_key(SECRET, "a") == study_key(SECRET, "a")
    assert len(study_key(SECRET, "a")) == 64


def test_the_signature_is_hmac_sha256_over_timestamp_dot_body():
    key, body = study_key(SECRET, "s1"), b'{"id":"e1"}'
    expected = hmac.new(key.encode(), f"{NOW}.".encode() + body, hashlib.sha256).hexdigest()
    assert signature(key, body, NOW) == f"t={NOW},v1={expected}"


def test_verification_refuses_tampering_other_keys_stale_and_malformed_headers():
    key, body = study_key(SECRET, "s1"), b'{"id":"e1","detail":{"status":"COMPLETED"}}'
    header = signature(key, body, NOW)
    assert verify(key, body, header, now=NOW + 10)
    assert not verify(key, body.replace(b"COMPLETED", b"FAILED"), header, now=NOW)
    assert not verify(study_key(SECRET, "s2"), body, header, now=NOW)
    assert not verify(key, body, header, now=NOW + 301)  # replayed later
    assert not verify(key, body, "v1=abc", now=NOW)
    assert not verify(key, body, f"t=soon,v1={header.split('v1=')[1]}", now=NOW)


def test_the_body_carries_the_event_id_type_and_detail():
    event = StudyStatusChanged(
        study_id="s1",
        tenant="lab-a",
        attempt=1,
        status="QUEUED",
        previous="VALIDATED",
        at=datetime(2026, 1, 1, tzinfo=UTC),
    )
    document = json.loads(body_of("e1", event))
    assert document == {
        "id": "e1",
        "type": "Study Status Changed",
        "detail": {
            "study_id": "s1",
            "tenant": "lab-a",
            "attempt": 1,
            "status": "QUEUED",
            "previous": "VALIDATED",
            "reason": None,
            "error": None,
            "at": "2026-01-01T00:00:00Z",
        },
    }


@pytest.mark.parametrize(
    ("url", "local_http", "allowed"),
    [
        ("https://hooks.example.org/voxelpipe", False, True),
        ("http://hooks.example.org/voxelpipe", False, False),
        ("http://localhost:8080/hook", False, False),
        ("http://localhost:8080/hook", True, True),
        ("http://127.0.0.1:8080/hook", True, True),
        ("http://hooks.example.org/hook", True, False),  # development allows only this machine
        ("ftp://hooks.example.org/", True, False),
        ("https:///no-host", False, False),
    ],
)
def test_webhook_urls_are_https_or_local_http_in_development(url: str, local_http: bool, allowed: bool):
    if allowed:
        assert check_webhook_url(url, allow_local_http=local_http) == url
    else:
        with pytest.raises(InvalidWebhookUrl):
            check_webhook_url(url, allow_local_http=local_http)


def test_retries_back_off_doubling_up_to_a_cap():
    assert [retry_delay_s(n) for n in range(1, 8)] == [30, 60, 120, 240, 480, 900, 900]


def test_the_receivers_snippet_in_the_docs_verifies_our_signatures():
    text = (Path(__file__).resolve().parents[2] / "docs" / "operations.md").read_text()
    (snippet,) = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    namespace: dict = {}
    exec(snippet, namespace)
    key, body = study_key(SECRET, "s1"), b'{"id":"e1"}'
    header = signature(key, body, int(time.time()))
    assert namespace["verify"](key, body, header)
    assert not namespace["verify"](key, body + b" ", header)
    assert not namespace["verify"](key, body, signature(key, body, int(time.time()) - 3600))
