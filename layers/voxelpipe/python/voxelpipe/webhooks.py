"""Signed webhooks: each study created with a `webhook_url` is told of every status change.

Signing keys: one per study, derived, never stored. The deployment keeps one secret in Secrets
Manager; a study's key is HMAC-SHA256(secret, "voxelpipe-webhook:" + study_id), hex. POST /studies
returns it once (`webhook_secret`); the webhook function derives it again to sign.

Each POST carries `Voxelpipe-Signature: t=<unix seconds>,v1=<hex>`, where hex is
HMAC-SHA256(study key, "<t>." + body). A receiver recomputes it and refuses stale timestamps.

Where webhooks may go is `webhook_urls`' call, made at registration and again at each delivery.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable
from dataclasses import dataclass

from voxelpipe import telemetry
from voxelpipe.observability import logger
from voxelpipe.ports import StudyStore
from voxelpipe.status_events import STATUS_CHANGED, DeliveryOutcome, StudyStatusChanged
from voxelpipe.telemetry import Dimension, Metric
from voxelpipe.webhook_urls import (
    InvalidWebhookUrl,
    Resolve,
    UnresolvableHost,
    WebhookTarget,
    resolve_addresses,
    webhook_target,
)

# What webhooks tell of: every status change, and every delivery's outcome (docs/deliveries.md).
WebhookEvent = StudyStatusChanged | DeliveryOutcome

SIGNATURE_HEADER = "Voxelpipe-Signature"
EVENT_ID_HEADER = "Voxelpipe-Event-Id"
SIGNATURE_VERSION = "v1"
TOLERANCE_S = 300  # how old a signed timestamp a receiver should accept
_KEY_CONTEXT = b"voxelpipe-webhook:"


class DeliveryFailed(RuntimeError):
    """The receiver did not answer 2xx (or could not be reached): the delivery is retried."""


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


def body_of(event_id: str, event: WebhookEvent) -> bytes:
    """The POST body: the event's id and type, and its detail as on the bus."""
    kind = event.detail_type if isinstance(event, DeliveryOutcome) else STATUS_CHANGED
    document = {"id": event_id, "type": kind, "detail": event.model_dump(mode="json")}
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
    event: WebhookEvent,
    store: StudyStore,
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
    study = store.get_study(event.study_id)
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


def deliver_with_backoff(
    send: Callable[[], Delivery],
    event: WebhookEvent,
    *,
    receive_count: int,
    retry_later: Callable[[int], None],
) -> Delivery:
    """`send()` (a `deliver` of `event`), counted; a failed delivery waits longer with each receive
    before its next try (`retry_later(seconds)` keeps its message hidden that long) and raises
    DeliveryFailed."""
    try:
        delivery = send()
    except DeliveryFailed:
        delay = retry_delay_s(receive_count)
        retry_later(delay)
        telemetry.count(Metric.WEBHOOK_DELIVERIES, Dimension.OUTCOME, "retry")
        logger.warning("webhook delivery failed", extra={"study_id": event.study_id, "retry_in_s": delay})
        raise
    telemetry.count(Metric.WEBHOOK_DELIVERIES, Dimension.OUTCOME, delivery.outcome)
    return delivery
