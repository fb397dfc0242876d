"""Live progress over WebSocket (docs/api.md, "Live progress"): who holds a connection, what it
follows, and what is sent to it. Who may connect is voxelpipe.live_auth's.

Messages to clients are JSON objects with a `type`: `status` (a StudyStatusChanged), `step` (a
step's progress), `subscribed`, `unsubscribed` and `error`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from voxelpipe.records import ALL_STUDIES, ConnectionRecord
from voxelpipe.status_events import StudyStatusChanged, StudyStepChanged
from voxelpipe.wiring import EnvVar


def live_url() -> str | None:
    """Where clients connect for live progress (the API is told by its environment); None: nowhere."""
    return os.environ.get(EnvVar.LIVE_URL) or None


@dataclass(frozen=True)
class LiveCaller:
    """Who holds a connection: a user (`role`, an api.auth.Role, set), or a viewer grant's holder,
    who may follow `grant_study_id` or the studies of `grant_subject_ref` only (ViewerGrant.covers)."""

    tenant: str
    subject: str
    expires_at: int  # Unix seconds: the connection is not served past it
    role: str | None = None
    grant_study_id: str | None = None
    grant_subject_ref: str | None = None

    def as_context(self) -> dict[str, str | int]:
        """The identity as an API Gateway authorizer's context carries it (strings and numbers)."""
        context: dict[str, str | int] = {
            "tenant": self.tenant,
            "subject": self.subject,
            "expires_at": self.expires_at,
        }
        optional = {
            "role": self.role,
            "grant_study_id": self.grant_study_id,
            "grant_subject_ref": self.grant_subject_ref,
        }
        context.update({key: value for key, value in optional.items() if value is not None})
        return context

    @classmethod
    def from_context(cls, context: dict[str, Any]) -> LiveCaller:
        """The identity an authorizer passed on (`as_context`'s shape, every value maybe a string)."""

        def text(key: str) -> str | None:
            value = context.get(key)
            return str(value) if value not in (None, "") else None

        return cls(
            tenant=str(context["tenant"]),
            subject=str(context["subject"]),
            expires_at=int(context["expires_at"]),
            role=text("role"),
            grant_study_id=text("grant_study_id"),
            grant_subject_ref=text("grant_subject_ref"),
        )


# -- what clients send ---------------------------------------------------------------------------


class SubscriptionRequest(BaseModel):
    """`{"action": "subscribe", "study_id": "…"}`, or without study_id: every study of the tenant."""

    model_config = ConfigDict(extra="forbid")

    action: Literal["subscribe", "unsubscribe"]
    study_id: str | None = Field(default=None, max_length=64)


# -- what clients receive ------------------------------------------------------------------------


def error_message(code: str, detail: str) -> dict[str, Any]:
    return {"type": "error", "code": code, "detail": detail}


def status_message(event: StudyStatusChanged) -> dict[str, Any]:
    return {"type": "status", **event.model_dump(mode="json", exclude={"tenant"})}


def step_message(event: StudyStepChanged) -> dict[str, Any]:
    return {"type": "step", **event.model_dump(mode="json", exclude={"tenant"})}


def follows(connection: ConnectionRecord, study_id: str, now: float) -> bool:
    """Whether a connection is to be told of this study's changes (its grant checked at subscribe)."""
    if connection.expires_at is not None and connection.expires_at.timestamp() <= now:
        return False
    return study_id in connection.studies or ALL_STUDIES in connection.studies


def parse_request(body: str | None) -> SubscriptionRequest | dict[str, Any]:
    """The request a client sent, or the error message to answer it with."""
    try:
        return SubscriptionRequest.model_validate_json(body or "")
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'message'}: {e['msg']}" for e in error.errors()
        )
        return error_message(
            "invalid_message",
            f'{problems} (send {{"action": "subscribe", "study_id": "…"}} or {{"action": "subscribe"}})',
        )
