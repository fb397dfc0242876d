"""Live progress: what a client may send, what it is sent, and which connections follow a study."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from voxelpipe.live import (
    LiveCaller,
    SubscriptionRequest,
    follows,
    parse_request,
    status_message,
    step_message,
)
from voxelpipe.records import ALL_STUDIES, ConnectionRecord
from voxelpipe.status_events import StudyStatusChanged, StudyStepChanged

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)


def test_requests_parse_and_anything_else_is_an_error_message_naming_the_field():
    assert parse_request('{"action": "subscribe"}') == SubscriptionRequest(action="subscribe")
    assert parse_request('{"action": "unsubscribe", "study_id": "abc"}') == SubscriptionRequest(
        action="unsubscribe", study_id="abc"
    )
    for body in (None, "", "not json", '{"action": "dance"}', '{"action": "subscribe", "extra": 1}', "[]"):
        answer = parse_request(body)
        assert isinstance(answer, dict) and answer["type"] == "error" and answer["code"] == "invalid_message"
    assert "action" in parse_request('{"action": "dance"}')["detail"]  # type: ignore[index]


def test_messages_carry_the_event_without_its_tenant():
    status = StudyStatusChanged(
        study_id="s", tenant="lab-a", attempt=2, status="RUNNING", previous="QUEUED", at=NOW
    )
    assert status_message(status) == {
        "type": "status",
        "study_id": "s",
        "attempt": 2,
        "status": "RUNNING",
        "previous": "QUEUED",
        "reason": None,
        "error": None,
        "at": "2026-12-04T12:00:00Z",
    }
    step = StudyStepChanged(
        study_id="s", tenant="lab-a", attempt=2, step="prepare", status="RUNNING", progress=60, at=NOW
    )
    assert step_message(step) == {
        "type": "step",
        "study_id": "s",
        "attempt": 2,
        "step": "prepare",
        "status": "RUNNING",
        "progress": 60,
        "at": "2026-12-04T12:00:00Z",
    }


def _connection(studies: list[str], expires_at: datetime) -> ConnectionRecord:
    return ConnectionRecord(
        "c", tenant="lab-a", subject="u", studies=studies, connected_at=NOW, expires_at=expires_at
    )


def test_a_connection_follows_its_studies_or_all_until_it_expires():
    later = NOW + timedelta(hours=1)
    assert follows(_connection(["s"], later), "s", NOW.timestamp())
    assert not follows(_connection(["s"], later), "t", NOW.timestamp())
    assert follows(_connection([ALL_STUDIES], later), "t", NOW.timestamp())
    assert not follows(_connection([ALL_STUDIES], NOW), "t", NOW.timestamp())  # expired
    assert not follows(_connection([], later), "s", NOW.timestamp())


def test_a_callers_identity_survives_the_authorizers_context():
    user = LiveCaller("lab-a", "ana", 1_800_000_000, role="admin")
    grant = LiveCaller("lab-a", "ana", 1_800_000_000, grant_subject_ref="sub-7")
    for caller in (user, grant):
        context = caller.as_context()
        assert all(isinstance(value, str | int) for value in context.values())  # no nulls for API Gateway
        assert LiveCaller.from_context({key: str(value) for key, value in context.items()}) == caller
