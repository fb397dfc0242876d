"""Who may open a live-progress WebSocket (docs/api.md, "Live progress").

A client connects with a token in the `token` query parameter (browsers cannot set headers on a
WebSocket): a user's token — a Cognito ID token in AWS, a development token under `voxelpipe
serve` — or a viewer grant (voxelpipe.viewer_grants). A URL may be logged on the way, so only
short-lived tokens belong there. A user's claims pass the REST API's own checks (api.auth.Claims).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jwt

from voxelpipe.api.auth import InvalidClaims, check_claims
from voxelpipe.live import LiveCaller
from voxelpipe.viewer_grants import GRANT_ISSUER, InvalidGrant, verify_grant

# API Gateway closes a WebSocket connection after two hours; its record expires then too.
MAX_CONNECTION_S = 2 * 3600
TOKEN_PARAMETER = "token"


class LiveRefused(Exception):
    """A connection refused at the door: 401 (no or a bad token) or 403 (no tenant or role)."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


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
        return LiveCaller(
            grant.tenant,
            grant.issued_to,
            expires,
            grant_study_id=grant.study_id,
            grant_subject_ref=grant.subject_ref,
        )
    try:
        claims = user_claims(token)
    except Exception as error:  # whatever the verifier raises: the token is not valid
        raise LiveRefused(
            401, f"the token is not valid: {getattr(error, 'detail', None) or error}"
        ) from error
    try:
        checked = check_claims(claims)
    except InvalidClaims as invalid:
        raise LiveRefused(invalid.status, str(invalid)) from invalid
    expires = int(now) + MAX_CONNECTION_S
    if isinstance(claims.get("exp"), int | float):
        expires = min(expires, int(claims["exp"]))
    return LiveCaller(checked.tenant, checked.sub, expires, role=checked.role.value)
