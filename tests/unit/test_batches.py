"""Bulk reprocess rules (voxelpipe/batches.py): what a query selects, the throttle, the outcomes."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from voxelpipe.batches import BatchQuery, ItemState, how_many_to_open, matches, outcome, progress
from voxelpipe.records import StudyRecord
from voxelpipe.status import StudyStatus


def _study(status: str = "COMPLETED", analyses: tuple[str, ...] = ("qc",), day: int = 5, ref: str = "s1"):
    at = datetime(2026, 1, day, tzinfo=UTC)
    return StudyRecord(
        "a" * 32,
        tenant="t",
        status=status,
        created_at=at,
        updated_at=at,
        analyses=list(analyses),
        subject={"subject_ref": ref},
    )


def test_a_query_selects_by_status_analyses_subject_and_creation():
    query = BatchQuery(
        without_analysis="regional",
        subject_ref="s1",
        created_from=datetime(2026, 1, 2, tzinfo=UTC),
        created_to=datetime(2026, 1, 9, tzinfo=UTC),
    )
    assert matches(_study(), query)
    assert not matches(_study(status="FAILED"), query)
    assert not matches(_study(analyses=("qc", "regional")), query)
    assert not matches(_study(ref="s2"), query)
    assert not matches(_study(day=1), query) and not matches(_study(day=10), query)
    assert matches(_study(analyses=("qc", "regional")), BatchQuery(with_analysis="regional"))
    assert not matches(_study(), BatchQuery(with_analysis="regional"))


def test_a_query_names_only_known_conditions():
    with pytest.raises(ValidationError):
        BatchQuery.model_validate({"colour": "red"})
    with pytest.raises(ValidationError):
        BatchQuery.model_validate({"subject_ref": "a b"})


@pytest.mark.parametrize(
    ("in_flight", "waiting", "limit", "backlog", "expected"),
    [
        (0, 20, 3, 0, 3),  # an empty pipeline: up to the throttle
        (2, 20, 3, 0, 1),  # one slot left
        (3, 20, 3, 0, 0),  # full
        (5, 20, 3, 0, 0),  # over (the throttle was lowered): nothing more
        (0, 2, 3, 0, 2),  # fewer waiting than slots
        (0, 20, 3, 1, 0),  # clinical work waits: it goes first
    ],
)
def test_the_throttle(in_flight: int, waiting: int, limit: int, backlog: int, expected: int):
    assert how_many_to_open(in_flight, waiting, limit, backlog) == expected


def test_what_an_attempt_came_to():
    assert outcome(StudyStatus.COMPLETED) is ItemState.COMPLETED
    assert outcome(StudyStatus.FAILED) is outcome(StudyStatus.REJECTED) is ItemState.FAILED
    assert outcome(StudyStatus.DELETED) is ItemState.SKIPPED
    assert outcome(StudyStatus.QUEUED) is None and outcome(StudyStatus.RUNNING) is None


def test_progress_counts_every_state_and_is_done_only_when_all_ended():
    states = ["COMPLETED", "OPENED", "OPENING", "SELECTED", "SKIPPED", "FAILED", "REJECTED"]
    counts = progress(states)
    assert counts["selected"] == 7 and counts["waiting"] == 1 and counts["in_flight"] == 2
    assert counts["completed"] == 1 and counts["opened"] == counts["opening"] == 1
    assert counts["skipped"] == counts["failed"] == counts["rejected"] == 1 and not counts["done"]
    assert progress(["COMPLETED", "SKIPPED"])["done"] and progress([])["done"]
