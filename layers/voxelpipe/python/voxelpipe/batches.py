"""Bulk reprocess, the rules: which studies a batch's query selects, how many of its studies may be
opened now, what became of each, and the batch's progress. The steps are in pipeline/batches.py.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from voxelpipe.records import StudyRecord
from voxelpipe.status import StudyStatus

# Studies a batch may select: the API selects them in the request (within API Gateway's 29 s),
# so a larger query is refused with a hint to narrow it (by created_from/created_to).
MAX_BATCH_STUDIES = 5000
# The batches table's sort keys: the batch's own row, and one row per selected study; `open` marks
# a batch the sweep still advances (a sparse index's key).
BATCH_ROW = "batch"
STUDY_ROW_PREFIX = "study#"
OPEN = "open"
ELIGIBLE = frozenset({StudyStatus.COMPLETED, StudyStatus.FAILED})


class ItemState(StrEnum):
    """What became of one selected study."""

    SELECTED = "SELECTED"  # waits for its turn
    OPENING = "OPENING"  # its attempt is being opened (written first: a crash midway resumes)
    OPENED = "OPENED"  # its attempt is queued or running
    COMPLETED = "COMPLETED"  # its attempt completed
    FAILED = "FAILED"  # its attempt failed (the error is kept)
    REJECTED = "REJECTED"  # the batch's analyses or parameters were refused for it (the reason)
    SKIPPED = "SKIPPED"  # deleted meanwhile, or an attempt already under way (the reason)


IN_FLIGHT = frozenset({ItemState.OPENING, ItemState.OPENED})
ENDED = frozenset({ItemState.COMPLETED, ItemState.FAILED, ItemState.REJECTED, ItemState.SKIPPED})


class BatchQuery(BaseModel):
    """Which of the tenant's studies a batch selects (every condition given must hold)."""

    model_config = ConfigDict(extra="forbid")

    status: StudyStatus = Field(
        default=StudyStatus.COMPLETED, description="COMPLETED (the default) or FAILED: ended studies only"
    )
    without_analysis: str | None = Field(
        default=None, description="only studies that did not request this analysis", examples=["regional"]
    )
    with_analysis: str | None = Field(default=None, description="only studies that requested this analysis")
    subject_ref: str | None = Field(default=None, pattern=r"^[A-Za-z0-9._-]{1,64}$")
    created_from: datetime | None = Field(default=None, description="created at or after (ISO 8601)")
    created_to: datetime | None = Field(default=None, description="created at or before (ISO 8601)")


def matches(study: StudyRecord, query: BatchQuery) -> bool:
    """Does the study meet the query's conditions (its status and creation time included)?"""
    analyses = set(study.analyses)
    subject = study.subject or {}
    return (
        study.status == query.status
        and (query.without_analysis is None or query.without_analysis not in analyses)
        and (query.with_analysis is None or query.with_analysis in analyses)
        and (query.subject_ref is None or subject.get("subject_ref") == query.subject_ref)
        and (query.created_from is None or study.created_at >= query.created_from)
        and (query.created_to is None or study.created_at <= query.created_to)
    )


def how_many_to_open(in_flight: int, waiting: int, max_in_flight: int, clinical_backlog: int) -> int:
    """How many more of a batch's studies to open now: none while clinical work (the high and normal
    queues) waits, else up to `max_in_flight` in flight at once."""
    if clinical_backlog > 0:
        return 0
    return max(0, min(waiting, max_in_flight - in_flight))


def outcome(status: str) -> ItemState | None:
    """What a batch's attempt of a study came to, from that attempt's status (None: not ended)."""
    if status == StudyStatus.COMPLETED:
        return ItemState.COMPLETED
    if status in (StudyStatus.FAILED, StudyStatus.REJECTED):
        return ItemState.FAILED
    if status == StudyStatus.DELETED:
        return ItemState.SKIPPED
    return None


def progress(states: list[str]) -> dict[str, Any]:
    """A batch's counts: `selected` (every study it selected), `waiting` (not opened yet),
    `opening`, `opened` (queued or running), `in_flight` (the two), `completed`, `failed`,
    `rejected`, `skipped`; `done` when every study ended."""
    counts = Counter(states)
    per_state = {
        ("waiting" if state is ItemState.SELECTED else state.value.lower()): counts.get(state.value, 0)
        for state in ItemState
    }
    return {
        "selected": len(states),
        **per_state,
        "in_flight": sum(counts.get(state.value, 0) for state in IN_FLIGHT),
        "done": all(state in ENDED for state in states),
    }
