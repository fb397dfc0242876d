"""Signed webhooks: each study created with a `webhook_url` is told of every status change.

Signing keys: one per study, derived, never stored. The deployment keeps one secret in Secrets
Manager; a study's key is HMAC-SHA256(secret, "voxelpipe-webhook:" + study_id), hex. POST /studies
returns it once (`webhook_secret`); the webhook function derives it again to sign.

Each POST carries `Voxelpipe-Signature: t=<unix seconds>,v1=<hex>`, where hex is
HMAC-SHA256(study key, "<t>." + body). A receiver recomputes it and refuses stale timestamps.

Where webhooks may go (`webhook_target`): https URLs without user:password@, naming their host by
name, every address of which is globally reachable — never link-local (169.254.169.254, the
instance metadata), loopback, private, unique-local, multicast, unspecified or reserved, nor an
IPv6 address carrying such an IPv4 one. Checked at registration (POST /studies) and again at each
delivery, which connects to the very address it checked, so a name rebound to an internal
address in between reaches nothing. Development mode (`voxelpipe serve`) also allows
http://localhost, 127.0.0.1 and [::1], on purpose: the tests' receivers run there.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import re
import socket
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from voxelpipe import tracking
from voxelpipe.status_events import STATUS_CHANGED, StudyStatusChanged

SIGNATURE_HEADER = "Voxelpipe-Signature"
EVENT_ID_HEADER = "Voxelpipe-Event-Id"
SIGNATURE_VERSION = "v1"
TOLERANCE_S = 300  # how old a signed timestamp a receiver should accept
_KEY_CONTEXT = b"voxelpipe-webhook:"
# Development mode's one exception (the tests' receivers run here): http to these hosts, when every
# address they resolve to is a loopback address.
LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})
_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
_NUMERIC_LABEL = re.compile(r"0x[0-9a-f]*|[0-9]+")  # how inet_aton reads 127.1, 0x7f000001, 0177.0.0.1
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


class InvalidWebhookUrl(ValueError):
    """A webhook URL voxelpipe will not call."""


class DeliveryFailed(RuntimeError):
    """The receiver did not answer 2xx (or could not be reached): the delivery is retried."""


class UnresolvableHost(InvalidWebhookUrl):
    """The URL's host name does not resolve (now): refused at registration, retried at delivery."""


@dataclass(frozen=True)
class WebhookTarget:
    """Where a webhook goes: its URL, the host it names (Host header, TLS server name), and the
    address that was checked, which is the one connected to (no second lookup to rebind)."""

    url: str
    scheme: str
    host: str
    port: int
    path: str  # path and query, as sent in the request line
    address: str


# resolve(host, port) -> every address the host name resolves to.
Resolve = Callable[[str, int], list[str]]


def resolve_addresses(host: str, port: int) -> list[str]:
    """The host name's addresses (socket.getaddrinfo); UnresolvableHost when there are none."""
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as error:
        raise UnresolvableHost(f"the webhook_url's host {host} does not resolve: {error}") from error
    return list(dict.fromkeys(str(sockaddr[0]) for *_, sockaddr in found))


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries (mapped, 6to4, Teredo, NAT64), if any."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def refused_address(text: str) -> str | None:
    """Why an address may not receive webhooks (None: it may): link-local, loopback, private,
    unique-local, multicast, unspecified, reserved, or otherwise not globally reachable."""
    address = ipaddress.ip_address(text.split("%", 1)[0])  # drop an IPv6 zone (fe80::1%eth0)
    embedded = _embedded_ipv4(address) if isinstance(address, ipaddress.IPv6Address) else None
    if embedded is not None:
        reason = refused_address(str(embedded))
        if reason is not None:
            return f"{text}, which carries {reason}"
    checks = (
        ("link-local", address.is_link_local),
        ("loopback", address.is_loopback),
        ("unspecified", address.is_unspecified),
        ("multicast", address.is_multicast),
        ("private", address.is_private),  # 10/8, 172.16/12, 192.168/16, fc00::/7 (unique local), ...
        ("reserved", address.is_reserved),
        ("not globally reachable", not address.is_global),
    )
    reason = next((name for name, hit in checks if hit), None)
    return None if reason is None else f"{text} is {reason}"


def _host_name(host: str) -> str:
    """The URL's host as DNS sees it (IDNA, lower case, no trailing dot); InvalidWebhookUrl for an
    IP address in any form or something that is no host name."""
    try:
        name = host.encode("idna").decode("ascii").lower().rstrip(".")
    except UnicodeError as error:
        raise InvalidWebhookUrl(f"{host!r} is not a host name") from error
    labels = name.split(".")
    if ":" in name or _NUMERIC_LABEL.fullmatch(labels[-1]):
        raise InvalidWebhookUrl("webhook URLs name their host by name, not by IP address")
    if len(name) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
        raise InvalidWebhookUrl(f"{host!r} is not a host name")
    return name


def webhook_target(url: str, *, allow_local: bool, resolve: Resolve = resolve_addresses) -> WebhookTarget:
    """Where `url` may be called, checked: https only, no user:password@, a host name (not an IP
    address) whose every address is globally reachable (refused_address). With `allow_local`
    (development mode only) http to localhost, 127.0.0.1 or ::1 too, when every address is loopback.
    InvalidWebhookUrl says what is wrong; UnresolvableHost when the name does not resolve.
    """
    parts = urlsplit(url)
    host = parts.hostname or ""
    local = allow_local and parts.scheme == "http" and host in LOCAL_HOSTS
    if not (parts.scheme == "https" or local):
        allowed = "https (or http://localhost in development)" if allow_local else "https"
        raise InvalidWebhookUrl(f"webhook URLs must use {allowed}")
    if "@" in parts.netloc:
        raise InvalidWebhookUrl("webhook URLs may not carry a user name or password")
    if not host:
        raise InvalidWebhookUrl("the webhook URL has no host")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as error:
        raise InvalidWebhookUrl(f"the webhook URL's port is not valid: {error}") from error
    name = host if local else _host_name(host)
    addresses = resolve(name, port)
    if not addresses:
        raise UnresolvableHost(f"the webhook_url's host {name} has no address")
    for address in addresses:
        if local:
            if not ipaddress.ip_address(address.split("%", 1)[0]).is_loopback:
                raise InvalidWebhookUrl(f"{host} resolves to {address}, not a loopback address")
        else:
            reason = refused_address(address)
            if reason is not None:
                raise InvalidWebhookUrl(f"the webhook_url's host {name} resolves to {reason}")
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return WebhookTarget(url, parts.scheme, name, port, path, addresses[0])


def check_webhook_url(url: str, *, allow_local: bool, resolve: Resolve = resolve_addresses) -> str:
    """`url`, if webhooks may be sent there (webhook_target); InvalidWebhookUrl if not."""
    webhook_target(url, allow_local=allow_local, resolve=resolve)
    return url


def study_key(deployment_secret: bytes, study_id: str) -> str:
    """The study's signing key (hex): derived from the deployment's secret, so never stored."""
    return hmac.new(deployment_secret, _KEY_CONTEXT + study_id.encode(), hashlib.sha256).hexdigest()


def signature(key: str, body: bytes, timestamp: int) -> str:
    digest = hmac.new(key.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},{SIGNATURE_VERSION}={digest}"


def verify(key: str, body: bytes, header: str, now: float, tolerance_s: int = TOLERANCE_S) -> bool:
    """What a receiver does (docs/operations.md has the same lines to copy)."""
    fields = dict(part.split("=", 1) for part in header.split(",") if "=" in part)
    try:
        timestamp = int(fields["t"])
    except (KeyError, ValueError):
        return False
    if abs(now - timestamp) > tolerance_s:
        return False
    expected = signature(key, body, timestamp).split(f"{SIGNATURE_VERSION}=", 1)[1]
    return hmac.compare_digest(expected, fields.get(SIGNATURE_VERSION, ""))


def body_of(event_id: str, event: StudyStatusChanged) -> bytes:
    """The POST body: the event's id and type, and its detail as on the bus."""
    document = {"id": event_id, "type": STATUS_CHANGED, "detail": event.model_dump(mode="json")}
    return json.dumps(document, separators=(",", ":")).encode()


@dataclass(frozen=True)
class Delivery:
    study_id: str
    status: str
    outcome: str  # "delivered" or "skipped"
    detail: str = ""


# post(target, body, headers) -> the receiver's HTTP status; connects to target.address (the
# address checked), never to a second lookup of the name; raises OSError when unreachable.
Post = Callable[[WebhookTarget, bytes, dict[str, str]], int]


def deliver(
    event_id: str,
    event: StudyStatusChanged,
    *,
    deployment_secret: bytes,
    post: Post,
    now: int,
    allow_local: bool,
    resolve: Resolve = resolve_addresses,
) -> Delivery:
    """POST one status change to its study's webhook, signed; DeliveryFailed to have it retried.

    The URL is checked again, its host resolved now and every address checked (a name that
    pointed outside at registration may point inside now): a refused address skips the delivery
    with the reason; the POST goes to the address checked.
    """
    study = tracking.get_study(event.study_id)
    if study is None or study.tenant != event.tenant or not study.webhook_url:
        return Delivery(event.study_id, event.status, "skipped", "no webhook")
    try:
        target = webhook_target(study.webhook_url, allow_local=allow_local, resolve=resolve)
    except UnresolvableHost as unresolvable:  # DNS may be back by the next try
        raise DeliveryFailed(f"{event.study_id}: {unresolvable}") from unresolvable
    except InvalidWebhookUrl as invalid:
        return Delivery(event.study_id, event.status, "skipped", str(invalid))
    body = body_of(event_id, event)
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "voxelpipe-webhook/1",
        EVENT_ID_HEADER: event_id,
        SIGNATURE_HEADER: signature(study_key(deployment_secret, event.study_id), body, now),
    }
    try:
        status = post(target, body, headers)
    except OSError as error:
        raise DeliveryFailed(f"{event.study_id}: {type(error).__name__}: {error}") from error
    if not 200 <= status < 300:
        raise DeliveryFailed(f"{event.study_id}: the receiver answered {status}")
    return Delivery(event.study_id, event.status, "delivered", str(status))


def retry_delay_s(receive_count: int, base_s: int = 30, cap_s: int = 900) -> int:
    """How long a failed delivery waits before its next try: doubling, capped (SQS allows 12 h)."""
    return int(min(cap_s, base_s * 2 ** max(0, receive_count - 1)))
