"""Putting status- and step-change events on the study event bus."""

from __future__ import annotations

import os
from functools import cache
from typing import TYPE_CHECKING

import boto3

from voxelpipe.status_events import (
    EVENT_SOURCE,
    STATUS_CHANGED,
    STEP_CHANGED,
    DeliveryOutcome,
    StudyStatusChanged,
    StudyStepChanged,
)
from voxelpipe.wiring import EnvVar

if TYPE_CHECKING:
    from mypy_boto3_events import EventBridgeClient


@cache
def _client() -> EventBridgeClient:
    return boto3.client("events")


def bus_name() -> str | None:
    """The bus of this deployment; None where none is configured (a bare table in a unit test)."""
    return os.environ.get(EnvVar.EVENT_BUS_NAME) or None


def _detail_type(event: StudyStatusChanged | StudyStepChanged | DeliveryOutcome) -> str:
    if isinstance(event, DeliveryOutcome):
        return event.detail_type
    return STATUS_CHANGED if isinstance(event, StudyStatusChanged) else STEP_CHANGED


def publish(event: StudyStatusChanged | StudyStepChanged | DeliveryOutcome) -> bool:
    """Put one event on the bus (its detail-type follows its model); False when EventBridge refused it."""
    bus = bus_name()
    if bus is None:
        return False
    response = _client().put_events(
        Entries=[
            {
                "EventBusName": bus,
                "Source": EVENT_SOURCE,
                "DetailType": _detail_type(event),
                "Detail": event.model_dump_json(),
                "Resources": [],
                "Time": event.at,
            }
        ]
    )
    return response.get("FailedEntryCount", 0) == 0
