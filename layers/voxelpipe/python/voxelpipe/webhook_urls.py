"""Where webhooks may go (`webhook_target`): https URLs without user:password@, naming their host by
name, every address of which is globally reachable — never link-local (169.254.169.254, the
instance metadata), loopback, private, unique-local, multicast, unspecified or reserved, nor an
IPv6 address carrying such an IPv4 one. Checked at registration (POST /studies) and again at each
delivery, which connects to the very address it checked, so a name rebound to an internal
address in between reaches nothing. Development mode (`voxelpipe serve`) also allows
http://localhost, 127.0.0.1 and [::1], on purpose: the tests' receivers run there.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

# Development mode's one exception (the tests' receivers run here): http to these hosts, when every
# address they resolve to is a loopback address.
LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})
_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
_NUMERIC_LABEL = re.compile(r"0x[0-9a-f]*|[0-9]+")  # how inet_aton reads 127.1, 0x7f000001, 0177.0.0.1
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


class InvalidWebhookUrl(ValueError):
    """A webhook URL voxelpipe will not call."""


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
