"""Webhook signing and verification, URL checks, retry backoff."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import re
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from voxelpipe.status_events import StudyStatusChanged
from voxelpipe.webhook_urls import (
    LOCAL_HOSTS,
    InvalidWebhookUrl,
    UnresolvableHost,
    check_webhook_url,
    resolve_addresses,
    webhook_target,
)
from voxelpipe.webhooks import body_of, retry_delay_s, signature, study_key, verify

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


# A stand-in for DNS (this machine may have none): the names these tests resolve. "localhost" is
# left to the real resolver.
PUBLIC = "93.184.215.14"
ADDRESSES = {
    "hooks.example.org": [PUBLIC, "2606:2800:21f:cb07:6820:80da:af6b:8b2c"],
    "metadata.example.org": ["169.254.169.254"],
    "intranet.example.org": ["10.0.0.5"],
    "mixed.example.org": [PUBLIC, "192.168.1.10"],  # one bad address is enough to refuse
    "ula.example.org": ["fd12:3456::1"],
    "mapped.example.org": ["::ffff:10.0.0.5"],
    "nat64.example.org": ["64:ff9b::a00:5"],
    "multicast.example.org": ["224.0.0.251"],
    "zero.example.org": ["0.0.0.0"],
    "reserved.example.org": ["240.0.0.1"],
    "cgnat.example.org": ["100.64.0.1"],
    "xn--bcher-kva.example": [PUBLIC],
}


def resolve(host: str, port: int) -> list[str]:
    if host in LOCAL_HOSTS:
        return resolve_addresses(host, port)
    if host not in ADDRESSES:
        raise UnresolvableHost(f"{host} does not resolve")
    return ADDRESSES[host]


@pytest.mark.parametrize(
    ("url", "local", "refusal"),
    [
        ("https://hooks.example.org/voxelpipe", False, None),
        ("https://hooks.example.org:8443/voxelpipe?x=1", False, None),
        ("https://bücher.example/hook", False, None),  # IDNA: the name DNS sees is xn--bcher-kva
        ("https://HOOKS.example.org./x", False, None),
        ("http://hooks.example.org/voxelpipe", False, "https"),
        ("http://localhost:8080/hook", False, "https"),
        ("http://localhost:8080/hook", True, None),
        ("http://127.0.0.1:8080/hook", True, None),
        ("http://[::1]:8080/hook", True, None),
        ("http://hooks.example.org/hook", True, "https"),  # development allows only this machine
        ("ftp://hooks.example.org/", True, "https"),
        ("https:///no-host", False, "no host"),
        # Internal addresses, by name...
        ("https://metadata.example.org/latest/meta-data/", False, "link-local"),
        ("https://intranet.example.org:8443/", False, "private"),
        ("https://mixed.example.org/", False, "private"),
        ("https://ula.example.org/", False, "private"),
        ("https://mapped.example.org/", False, "private"),
        ("https://nat64.example.org/", False, "private"),
        ("https://multicast.example.org/", False, "multicast"),
        ("https://zero.example.org/", False, "unspecified"),
        ("https://reserved.example.org/", False, "reserved"),
        ("https://cgnat.example.org/", False, "not globally reachable"),
        ("https://localhost:8443/hook", False, "loopback"),  # the real resolver: 127.0.0.1
        # ...and by IP address, in any form: refused, whatever the address.
        ("https://169.254.169.254/latest/meta-data/", False, "IP address"),
        ("https://10.0.0.5:8443/", False, "IP address"),
        ("https://93.184.215.14/", False, "IP address"),
        ("https://2130706433/", False, "IP address"),  # 127.0.0.1 as one decimal number
        ("https://0x7f000001/", False, "IP address"),
        ("https://0177.0.0.1/", False, "IP address"),
        ("https://127.1/", False, "IP address"),
        ("https://0xa9.254.169.254/", False, "IP address"),
        ("https://[::ffff:127.0.0.1]/", False, "IP address"),
        ("https://[::ffff:a9fe:a9fe]/", False, "IP address"),
        ("https://[fe80::1%25eth0]/", False, "IP address"),
        # Full-width digits and dots: IDNA makes them 127.0.0.1.
        ("https://\uff11\uff12\uff17\uff0e\uff10\uff0e\uff10\uff0e\uff11/", False, "IP address"),
        ("https://[::1]:8443/", True, "IP address"),  # development's exception is http only
        ("https://localhost:8443/hook", True, "loopback"),
        ("https://user:pass@hooks.example.org/", False, "user name"),
        ("https://hooks.example.org@10.0.0.5/", False, "user name"),
        ("https://user@localhost/", True, "user name"),
        ("https://nowhere.example.org/", False, "does not resolve"),
        ("https://hooks.example.org:99999/", False, "port"),
        ("https://ho%6fks.example.org/", False, "not a host name"),
        ("https://-bad-.example.org/", False, "not a host name"),
    ],
)
def test_webhook_urls_are_public_https_names_or_local_http_in_development(
    url: str, local: bool, refusal: str | None
):
    if refusal is None:
        target = webhook_target(url, allow_local=local, resolve=resolve)
        assert target.address in resolve(target.host, target.port)
        assert check_webhook_url(url, allow_local=local, resolve=resolve) == url
    else:
        with pytest.raises(InvalidWebhookUrl, match=refusal):
            check_webhook_url(url, allow_local=local, resolve=resolve)


def test_http_to_localhost_is_developments_exception_and_goes_to_a_loopback_address():
    target = webhook_target("http://localhost:8080/hook", allow_local=True, resolve=resolve)
    assert target.host == "localhost" and ipaddress.ip_address(target.address).is_loopback
    # A local name that resolves elsewhere is no exception.
    with pytest.raises(InvalidWebhookUrl, match="not a loopback address"):
        webhook_target("http://localhost/", allow_local=True, resolve=lambda host, port: [PUBLIC])


def test_the_target_pins_the_checked_address_host_port_and_path():
    target = webhook_target("https://Hooks.Example.org:8443/a/b?c=d", allow_local=False, resolve=resolve)
    assert (target.scheme, target.host, target.port, target.path, target.address) == (
        "https",
        "hooks.example.org",
        8443,
        "/a/b?c=d",
        PUBLIC,
    )


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


def test_a_delivery_event_is_posted_with_its_own_type():
    from voxelpipe.status_events import DeliveryOutcome

    event = DeliveryOutcome(
        study_id="s1",
        tenant="lab-a",
        attempt=1,
        destination="pacs",
        status="FAILED",
        objects=3,
        acknowledged=1,
        sends=8,
        error="C-STORE: status 0xA700",
        at=datetime(2026, 1, 1, tzinfo=UTC),
    )
    document = json.loads(body_of("e2", event))
    assert document["type"] == "Delivery Failed" and document["detail"]["destination"] == "pacs"
    delivered = event.model_copy(update={"status": "DELIVERED", "error": None})
    assert json.loads(body_of("e3", delivered))["type"] == "Study Delivered"
