"""Deliveries (docs/deliveries.md): which destinations a completed study's DICOM outputs go to, and
which of them still need sending.

A delivery is one study attempt's outputs to one destination. Each object sent is acknowledged by
SOP Instance UID once the destination accepted it; a retry or a redrive sends only the objects not
acknowledged, so nothing reaches a destination twice.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class DeliveryStatus(StrEnum):
    PENDING = "PENDING"
    DELIVERED = "DELIVERED"
    FAILED = "FAILED"


class OutputObject(BaseModel):
    """One DICOM object a study's results list (`results.json` `dicom_outputs`)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    key: str
    kind: str = ""
    sop_class_uid: str
    sop_instance_uid: str
    series_instance_uid: str = ""


class DeliveryMessage(BaseModel):
    """The delivery queue's message: send this study attempt's outputs to this destination."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    study_id: str
    attempt: int = Field(ge=1)
    destination: str


def delivery_key(attempt: int, destination: str) -> str:
    """A delivery's sort key on the study: attempts in order, then destination names."""
    return f"{attempt:06d}#{destination}"


def destinations_for(decisions: Iterable[Mapping[str, Any]], requested: Sequence[str]) -> list[str]:
    """The destinations a study goes to: those its series' routing decisions name, then those its
    creator requested; each once, in that order."""
    names: list[str] = []
    for decision in decisions:
        for name in decision.get("destinations") or []:
            if isinstance(name, str) and name not in names:
                names.append(name)
    for name in requested:
        if name not in names:
            names.append(name)
    return names


def series_decisions(dicom: Any, study_id: str) -> list[Mapping[str, Any]]:
    """The routing decisions of the exam's series that made this study (`StudyRecord.dicom`)."""
    series = dicom.get("series") if isinstance(dicom, Mapping) else None
    if not isinstance(series, list):
        return []
    return [
        entry["decision"]
        for entry in series
        if isinstance(entry, Mapping)
        and isinstance(entry.get("decision"), Mapping)
        and entry.get("study_id") in (None, study_id)
    ]


def dicom_outputs(results: Mapping[str, Any]) -> list[OutputObject]:
    """The DICOM objects results.json lists (none for a NIfTI study)."""
    return [OutputObject.model_validate(entry) for entry in results.get("dicom_outputs") or []]


def unacknowledged(objects: Sequence[OutputObject], acknowledged: Iterable[str]) -> list[OutputObject]:
    """The objects still to send: those whose SOP Instance UID the destination has not acknowledged."""
    done = set(acknowledged)
    return [item for item in objects if item.sop_instance_uid not in done]


def retry_delay_s(receive_count: int, base_s: int = 60, cap_s: int = 3600) -> int:
    """How long a failed delivery waits before its next try: doubling, capped."""
    return int(min(cap_s, base_s * 2 ** max(0, receive_count - 1)))
