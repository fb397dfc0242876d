"""The events put on the EventBridge bus as a study moves (docs/operations.md).

`source` is "voxelpipe". At every status change, `detail-type` "Study Status Changed" with a
`StudyStatusChanged` detail (events/study_status_changed.schema.json); as a step starts, reports
progress or ends, "Study Step Changed" with a `StudyStepChanged` detail
(events/study_step_changed.schema.json). Tests keep each schema equal to its model.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from voxelpipe.records import StudyRecord, TaskRecord
from voxelpipe.wiring import DELIVERY_FAILED, EVENT_SOURCE, STATUS_CHANGED, STEP_CHANGED, STUDY_DELIVERED

__all__ = [
    "DELIVERY_FAILED",
    "EVENT_SOURCE",
    "STATUS_CHANGED",
    "STEP_CHANGED",
    "STUDY_DELIVERED",
    "DeliveryOutcome",
    "StudyStatusChanged",
    "StudyStepChanged",
    "status_changed",
    "step_changed",
]


class StudyStatusChanged(BaseModel):
    """A study moved to `status` (from `previous`, None when it was just created)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    study_id: str
    tenant: str
    attempt: int = Field(ge=1)
    status: str
    previous: str | None = None
    reason: str | None = Field(default=None, description="the reason code, when REJECTED")
    error: dict[str, Any] | None = Field(default=None, description="type, message, step, retryable; FAILED")
    at: datetime = Field(description="when the study changed status (its updated_at)")


def status_changed(study: StudyRecord, previous: str | None) -> StudyStatusChanged:
    """The event of a study record as it is right after its change."""
    return StudyStatusChanged(
        study_id=study.study_id,
        tenant=study.tenant,
        attempt=int(study.attempt),
        status=study.status,
        previous=previous,
        reason=study.reason,
        error=study.error,
        at=study.updated_at,
    )


class StudyStepChanged(BaseModel):
    """A step of a study's attempt started (RUNNING, progress 0), reported progress, or ended
    (SUCCEEDED with progress 100, or FAILED)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    study_id: str
    tenant: str
    attempt: int = Field(ge=1)
    step: str = Field(description="validate, prepare, analysis:{name} or finalize")
    status: str = Field(description="RUNNING, SUCCEEDED or FAILED")
    progress: int = Field(ge=0, le=100)
    at: datetime = Field(description="when the step changed")


def step_changed(task: TaskRecord, tenant: str, at: datetime) -> StudyStepChanged:
    """The event of a task record as it is right after its change."""
    return StudyStepChanged(
        study_id=task.study_id,
        tenant=tenant,
        attempt=int(task.attempt),
        step=task.step,
        status=task.status,
        progress=int(task.progress),
        at=at,
    )


class DeliveryOutcome(BaseModel):
    """A delivery ended: every object acknowledged (detail-type "Study Delivered",
    events/study_delivered.schema.json) or given up after its retries or at once for an error no
    retry mends (detail-type "Delivery Failed", events/delivery_failed.schema.json)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    study_id: str
    tenant: str
    attempt: int = Field(ge=1)
    destination: str = Field(description="the destination's name")
    status: str = Field(description="DELIVERED or FAILED")
    objects: int = Field(ge=0, description="DICOM objects the delivery carries")
    acknowledged: int = Field(ge=0, description="objects the destination accepted")
    sends: int = Field(ge=0, description="times the delivery was tried")
    error: str | None = Field(default=None, description="why it failed; FAILED only")
    at: datetime

    @property
    def detail_type(self) -> str:
        return STUDY_DELIVERED if self.status == "DELIVERED" else DELIVERY_FAILED
