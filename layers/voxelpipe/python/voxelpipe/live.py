"""Live progress over WebSocket (docs/api.md, "Live progress"): who may connect, and what is sent.

A client connects with a token in the `token` query parameter (browsers cannot set headers on a
WebSocket): a user's token — a Cognito ID token in AWS, a development token under `voxelpipe
serve` — or a viewer grant (voxelpipe.viewer_grants). A URL may be logged on the way, so only
short-lived tokens belong there. The same claim checks as the REST API's apply (api.auth.Claims).

Messages to clients are JSON objects with a `type`: `status` (a StudyStatusChanged), `step` (a
step's progress), `subscribed`, `unsubscribed` and `error`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import jwt
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from voxelpipe.api.auth import InvalidClaims, Role, check_claims
from voxelpipe.records import ALL_STUDIES, ConnectionRecord
from voxelpipe.status_events import StudyStatusChanged, StudyStepChanged
from voxelpipe.viewer_grants import GRANT_ISSUER, InvalidGrant, ViewerGrant, verify_grant

# API Gateway closes a WebSocket connection after two hours; its record expires then too.
MAX_CONNECTION_S = 2 * 3600
TOKEN_PARAMETER = "token"


class LiveRefused(Exception):
    """A connection refused at the door: 401 (no or a bad token) or 403 (no tenant or role)."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


@dataclass(frozen=True)
class LiveCaller:
    """Who holds a connection: a user (`role` set) or a viewer grant's holder (`grant` set)."""

    tenant: str
    subject: str
    expires_at: int  # Unix seconds: the connection is not served past it
    role: Role | None = None
    grant: ViewerGrant | None = None

    def as_context(self) -> dict[str, str | int]:
        """The identity as an API Gateway authorizer's context carries it (strings and numbers)."""
        context: dict[str, str | int] = {
            "tenant": self.tenant,
            "subject": self.subject,
            "expires_at": self.expires_at,
        }
        if self.role is not None:
            context["role"] = self.role.value
        if self.grant is not None:
            if self.grant.study_id is not None:
                context["grant_study_id"] = self.grant.study_id
            if self.grant.subject_ref is not None:
                context["grant_subject_ref"] = self.grant.subject_ref
        return context

    @classmethod
    def from_context(cls, context: dict[str, Any]) -> LiveCaller:
        """The identity an authorizer passed on (`as_context`'s shape, every value maybe a string)."""
        tenant, subject = str(context["tenant"]), str(context["subject"])
        expires_at = int(context["expires_at"])
        if context.get("role"):
            return cls(tenant, subject, expires_at, role=Role(str(context["role"])))
        grant = ViewerGrant(
            tenant=tenant,
            issued_to=subject,
            expires_at=expires_at,
            study_id=context.get("grant_study_id") or None,
            subject_ref=context.get("grant_subject_ref") or None,
        )
        return cls(tenant, subject, expires_at, grant=grant)


def authorize(
    token: str | None,
    *,
    user_claims: Callable[[str], dict[str, Any]],
    grant_key: Callable[[], bytes],
    now: float,
) -> LiveCaller:
    """The caller a token proves, or LiveRefused.

    `user_claims` verifies a user's token (signature, issuer, expiry) and returns its claims,
    raising on a bad one: the Cognito JWKS in AWS, the development secret locally. A token whose
    (unverified) issuer is the viewer grants' is verified as a grant instead, with `grant_key()`.
    """
    if not token:
        raise LiveRefused(401, f"no token: connect with ?{TOKEN_PARAMETER}=<a short-lived token>")
    try:
        issuer = jwt.decode(token, options={"verify_signature": False}).get("iss")
    except jwt.PyJWTError as error:
        raise LiveRefused(401, f"the token is not a JWT: {error}") from error
    if issuer == GRANT_ISSUER:
        try:
            grant = verify_grant(grant_key(), token, now=now)
        except InvalidGrant as invalid:
            raise LiveRefused(401, str(invalid)) from invalid
        expires = min(grant.expires_at, int(now) + MAX_CONNECTION_S)
        return LiveCaller(grant.tenant, grant.issued_to, expires, grant=grant)
    try:
        claims = user_claims(token)
    except Exception as error:  # whatever the verifier raises: the token is not valid
        raise LiveRefused(401, f"the token is not valid: {getattr(error, 'detail', None) or error}") from error
    try:
        checked = check_claims(claims)
    except InvalidClaims as invalid:
        raise LiveRefused(invalid.status, str(invalid)) from invalid
    expires = int(now) + MAX_CONNECTION_S
    if isinstance(claims.get("exp"), int | float):
        expires = min(expires, int(claims["exp"]))
    return LiveCaller(checked.tenant, checked.sub, expires, role=checked.role)


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
