"""The event put on the EventBridge bus at every status change of a study (docs/operations.md).

`source` is "voxelpipe", `detail-type` "Study Status Changed"; the detail is `StudyStatusChanged`.
Its JSON schema is events/study_status_changed.schema.json (a test keeps the two equal).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from voxelpipe.records import StudyRecord
from voxelpipe.wiring import EVENT_SOURCE, STATUS_CHANGED

__all__ = ["EVENT_SOURCE", "STATUS_CHANGED", "StudyStatusChanged", "status_changed"]


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
