"""Deliveries of a completed study's DICOM outputs to its destinations (docs/deliveries.md).

`plan_deliveries` runs when a study COMPLETES (its Study Status Changed event reaches the delivery
queue through an EventBridge rule): one DeliveryRecord per destination, and one delivery message
each. `deliver` runs for each delivery message: it sends what the destination has not
acknowledged yet, one object at a time, recording each acknowledgement as it comes, so a retry (or
a redrive) never sends an object twice. A failed send raises RetryDelivery (the message comes back
later); the last receive before the dead-letter queue marks the delivery FAILED. Errors no retry
mends (an unknown destination, no DICOM outputs, no identity map) fail the delivery at once.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pydicom import dcmread

from voxelpipe.deliveries import (
    DeliveryMessage,
    DeliveryStatus,
    OutputObject,
    delivery_key,
    destinations_for,
    dicom_outputs,
    retry_delay_s,
    series_decisions,
    unacknowledged,
)
from voxelpipe.keys import derived_key
from voxelpipe.observability import logger
from voxelpipe.pipeline.attempts import archived_results_key, attempt_prefix
from voxelpipe.ports import (
    Deliveries,
    DeliveryQueue,
    DestinationNotFound,
    Destinations,
    DestinationSecrets,
    ObjectStorage,
    ReidentificationFailed,
    Reidentifier,
    Sender,
    SendFailed,
    StudyStore,
)
from voxelpipe.records import DeliveryRecord, StudyRecord
from voxelpipe.status import StudyStatus
from voxelpipe.status_events import DeliveryOutcome

if TYPE_CHECKING:
    from voxelpipe.destinations import Credentials
    from voxelpipe.ports import AnyDestination


MakeSender = Callable[["AnyDestination", "Credentials | None", str], Sender]
Publish = Callable[[DeliveryOutcome], bool]


@dataclass(frozen=True)
class DeliveryAdapters:
    store: StudyStore
    storage: ObjectStorage
    destinations: Destinations
    secrets: DestinationSecrets
    deliveries: Deliveries
    queue: DeliveryQueue
    make_sender: MakeSender
    reidentify: Reidentifier
    publish: Publish


class RetryDelivery(RuntimeError):
    """A send failed and the delivery will be tried again (the message goes back to the queue)."""


def _now() -> datetime:
    return datetime.now(UTC)


def _outputs(storage: ObjectStorage, study: StudyRecord) -> list[OutputObject]:
    if not study.results_key:
        return []
    return dicom_outputs(json.loads(storage.read(study.results_key)))


def _attempt_outputs(
    storage: ObjectStorage, study: StudyRecord, attempt: int, keys: list[str]
) -> list[OutputObject]:
    """The DICOM outputs of the study's attempt `attempt` that a delivery planned (`keys`, where they
    lay when it was planned): the latest attempt's at the top of derived/{id}/, an earlier one's
    where it was kept when the next attempt opened (pipeline/attempts.py), so a delivery still
    retrying sends what its own attempt produced."""
    if attempt == int(study.attempt):
        wanted = set(keys)
        return [item for item in _outputs(storage, study) if item.key in wanted]
    top, archive = derived_key(study.study_id) + "/", attempt_prefix(study.study_id, attempt)
    wanted = {archive + key.removeprefix(top) if key.startswith(top) else key for key in keys}
    results = json.loads(storage.read(archived_results_key(study.study_id, attempt)))
    return [item for item in dicom_outputs(results) if item.key in wanted]


def _outcome(record: DeliveryRecord, status: DeliveryStatus, error: str | None) -> DeliveryOutcome:
    return DeliveryOutcome(
        study_id=record.study_id,
        tenant=record.tenant,
        attempt=int(record.attempt),
        destination=record.destination,
        status=status.value,
        objects=len(record.objects or []),
        acknowledged=len(set(record.acknowledged or [])),
        sends=int(record.attempts or 0),
        error=error,
        at=_now(),
    )


def plan_deliveries(study: StudyRecord, adapters: DeliveryAdapters) -> list[DeliveryRecord]:
    """One delivery per destination of a COMPLETED study (its series' routing decisions, then its
    own request), each queued; an unknown destination or a study with no DICOM outputs is a
    delivery FAILED at once with the reason. A study planned before (a repeated event) is left as
    it is."""
    if study.status != StudyStatus.COMPLETED:
        return []
    decisions = series_decisions(study.dicom, study.study_id)
    exam = adapters.store.get_study(study.exam_id) if study.exam_id else None
    if exam is not None:  # a routed study: its series' decision is on the exam it came from
        decisions += series_decisions(exam.dicom, study.study_id)
    names = destinations_for(decisions, study.destinations or [])
    if not names:
        return []
    outputs = _outputs(adapters.storage, study)
    planned = []
    for name in names:
        error: str | None = None
        internal = False
        try:
            internal = adapters.destinations.get(study.tenant, name).internal
        except DestinationNotFound:
            error = f"unknown destination {name!r}: the tenant has no destination of that name"
        if error is None and not outputs:
            error = "the study has no DICOM outputs to deliver (only DICOM-origin studies have them)"
        at = _now()
        record = DeliveryRecord(
            study.study_id,
            delivery_key(int(study.attempt), name),
            tenant=study.tenant,
            destination=name,
            attempt=int(study.attempt),
            internal=internal,
            objects=[item.key for item in outputs],
            acknowledged=[],
            attempts=0,
            status=(DeliveryStatus.FAILED if error else DeliveryStatus.PENDING).value,
            error=error,
            created_at=at,
            updated_at=at,
        )
        if not adapters.deliveries.create(record):
            continue  # planned by an earlier copy of the event
        planned.append(record)
        if error:
            logger.warning("delivery failed", extra={"study_id": study.study_id, "destination": name})
            adapters.publish(_outcome(record, DeliveryStatus.FAILED, error))
        else:
            adapters.queue.send(
                DeliveryMessage(study_id=study.study_id, attempt=int(study.attempt), destination=name)
            )
    return planned


def _to_send(data: bytes, study_id: str, internal: bool, reidentify: Reidentifier) -> bytes:
    """The object as it leaves: re-identified for an internal destination, else as stored."""
    if not internal:
        return data
    dataset = reidentify(study_id, dcmread(io.BytesIO(data)))
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _fail(adapters: DeliveryAdapters, record: DeliveryRecord, error: str, *, tried: bool) -> DeliveryStatus:
    if tried:
        adapters.deliveries.tried(record, DeliveryStatus.FAILED, error)
    else:
        adapters.deliveries.set_status(record, DeliveryStatus.FAILED, error)
    adapters.publish(_outcome(record, DeliveryStatus.FAILED, error))
    logger.warning("delivery failed", extra={"study_id": record.study_id, "destination": record.destination})
    return DeliveryStatus.FAILED


def deliver(
    message: DeliveryMessage, adapters: DeliveryAdapters, *, receive_count: int, max_receive_count: int
) -> DeliveryStatus:
    """Send a delivery's unacknowledged objects; its status after this try. RetryDelivery when a
    send failed and tries are left (the last receive marks it FAILED and returns)."""
    record = adapters.deliveries.get(message.study_id, message.attempt, message.destination)
    if record is None or record.status != DeliveryStatus.PENDING:
        # Not planned (nothing to do), or delivered / failed already (a repeated message).
        return DeliveryStatus(record.status) if record else DeliveryStatus.FAILED
    study = adapters.store.get_study(message.study_id)
    if study is None or study.status == StudyStatus.DELETED:
        return _fail(adapters, record, "the study was deleted", tried=False)
    try:
        destination = adapters.destinations.get(record.tenant, record.destination)
    except DestinationNotFound:
        return _fail(
            adapters, record, f"unknown destination {record.destination!r}: deleted since", tried=False
        )
    pending = unacknowledged(
        _attempt_outputs(adapters.storage, study, int(record.attempt), list(record.objects or [])),
        record.acknowledged or [],
    )
    try:
        credentials = adapters.secrets.get(destination.secret_id) if destination.secret_id else None
        sender = adapters.make_sender(destination, credentials, record.study_id)
        try:
            for item in pending:
                data = _to_send(
                    adapters.storage.read(item.key),
                    record.study_id,
                    destination.internal,
                    adapters.reidentify,
                )
                sender.send(data, item)
                adapters.deliveries.acknowledge(record, item.sop_instance_uid)
        finally:
            sender.close()
    except ReidentificationFailed as error:
        return _fail(adapters, record, f"re-identification: {error}", tried=True)
    except SendFailed as error:
        if receive_count >= max_receive_count:
            return _fail(adapters, record, f"{error} (gave up after {receive_count} tries)", tried=True)
        adapters.deliveries.tried(record, DeliveryStatus.PENDING, str(error))
        raise RetryDelivery(f"{record.study_id} to {record.destination}: {error}") from error
    adapters.deliveries.tried(record, DeliveryStatus.DELIVERED, None)
    fresh = adapters.deliveries.get(message.study_id, message.attempt, message.destination) or record
    adapters.publish(_outcome(fresh, DeliveryStatus.DELIVERED, None))
    return DeliveryStatus.DELIVERED


class NothingToRedrive(LookupError):
    """The study has no delivery to that destination."""


def redrive(
    study: StudyRecord, destination: str, deliveries: Deliveries, queue: DeliveryQueue
) -> DeliveryRecord:
    """Send the study's latest delivery to `destination` again (only what the destination has not
    acknowledged goes): PENDING and queued. A delivery DELIVERED already is left as it is."""
    records = [record for record in deliveries.for_study(study.study_id) if record.destination == destination]
    if not records:
        raise NothingToRedrive(f"no delivery to {destination!r}")
    latest = max(records, key=lambda record: int(record.attempt))
    if latest.status == DeliveryStatus.DELIVERED:
        return latest
    deliveries.set_status(latest, DeliveryStatus.PENDING, None)
    queue.send(
        DeliveryMessage(study_id=latest.study_id, attempt=int(latest.attempt), destination=destination)
    )
    return deliveries.get(latest.study_id, int(latest.attempt), destination) or latest


def plan_for_event(detail: dict[str, Any], adapters: DeliveryAdapters) -> list[DeliveryRecord]:
    """A Study Status Changed event's deliveries: planned when it tells of the study's current
    attempt COMPLETED (an old attempt's event plans nothing)."""
    study = adapters.store.get_study(str(detail.get("study_id")))
    if study is None or detail.get("status") != StudyStatus.COMPLETED:
        return []
    if int(detail.get("attempt") or 0) != int(study.attempt):
        return []
    return plan_deliveries(study, adapters)


def handle_delivery_message(
    body: dict[str, Any],
    adapters: DeliveryAdapters,
    *,
    receive_count: int,
    max_receive_count: int,
    retry_later: Callable[[int], None],
) -> str:
    """One message of the delivery queue: a study's status-change event (plan its deliveries) or a
    delivery (send it). A failed send waits longer at each receive (`retry_later(seconds)`) and
    raises RetryDelivery, so the message comes back; the outcome otherwise."""
    if "detail-type" in body:
        planned = plan_for_event(dict(body.get("detail") or {}), adapters)
        return f"planned {len(planned)}"
    message = DeliveryMessage.model_validate(body)
    try:
        status = deliver(message, adapters, receive_count=receive_count, max_receive_count=max_receive_count)
    except RetryDelivery:
        retry_later(retry_delay_s(receive_count))
        raise
    except Exception as error:
        # Anything else (an output missing from the bucket, a table error) is retried as a crash;
        # its last receive still leaves the delivery FAILED with the reason, not PENDING for ever.
        if receive_count >= max_receive_count:
            record = adapters.deliveries.get(message.study_id, message.attempt, message.destination)
            if record is not None and record.status == DeliveryStatus.PENDING:
                _fail(adapters, record, f"{type(error).__name__}: {error}", tried=True)
        raise
    return status.value
