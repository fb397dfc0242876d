"""Viewer grants: short-lived, read-only tokens for one study or one subject's studies.

An authorised user asks the API for a viewer link; the link carries a grant (in the URL's fragment,
which browsers never send to a server or put in a Referer). The viewer page presents it as a bearer
token to read that study's (or subject's) data and to subscribe to its live progress, and to nothing
else. It expires after minutes (`DEFAULT_TTL_S`, at most `MAX_TTL_S`), so a copied link soon stops
working; no long-lived token is ever put in a URL.

A grant is an HS256 JWT signed with a key derived from the deployment's secret with its own context
(as the list cursors' key is), so it cannot be mistaken for, or forged from, any other token.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from dataclasses import dataclass

import jwt

from voxelpipe.keys import is_study_id, is_tenant

GRANT_ISSUER = "voxelpipe-viewer"
GRANT_ALGORITHM = "HS256"
DEFAULT_TTL_S = 15 * 60
MAX_TTL_S = 60 * 60
_CONTEXT = b"voxelpipe viewer grants v1"
_REQUIRED = ("exp", "iat", "iss", "sub", "tenant", "scope")


class InvalidGrant(ValueError):
    """A grant that is not one: bad signature, expired, malformed or of an unknown scope."""


@dataclass(frozen=True)
class ViewerGrant:
    """What a grant allows: reading `study_id` (a study grant) or every study of `subject_ref` (a
    subject grant) of `tenant`, until `expires_at` (Unix seconds). `issued_to` is the user's subject."""

    tenant: str
    issued_to: str
    expires_at: int
    study_id: str | None = None
    subject_ref: str | None = None

    def covers(self, tenant: str, study_id: str, subject_ref: str | None) -> bool:
        """Whether the grant lets its holder read this study (of this tenant and subject)."""
        if tenant != self.tenant:
            return False
        if self.study_id is not None:
            return study_id == self.study_id
        return self.subject_ref is not None and subject_ref == self.subject_ref


def grant_key(deployment_secret: bytes) -> bytes:
    """The key grants are signed with."""
    return hmac.new(deployment_secret, _CONTEXT, hashlib.sha256).digest()


def issue_grant(
    key: bytes,
    *,
    tenant: str,
    issued_to: str,
    study_id: str | None = None,
    subject_ref: str | None = None,
    ttl_s: int = DEFAULT_TTL_S,
    now: float | None = None,
) -> tuple[str, ViewerGrant]:
    """A signed grant for exactly one of `study_id` or `subject_ref`, and what it allows."""
    if (study_id is None) == (subject_ref is None):
        raise ValueError("a grant is for one study or one subject")
    if not 0 < ttl_s <= MAX_TTL_S:
        raise ValueError(f"a grant lives 1 to {MAX_TTL_S} s, not {ttl_s}")
    issued = int(now if now is not None else time.time())
    grant = ViewerGrant(
        tenant=tenant,
        issued_to=issued_to,
        expires_at=issued + ttl_s,
        study_id=study_id,
        subject_ref=subject_ref,
    )
    scope = {"study_id": study_id} if study_id is not None else {"subject_ref": subject_ref}
    claims = {
        "iss": GRANT_ISSUER,
        "sub": issued_to,
        "iat": issued,
        "exp": grant.expires_at,
        "tenant": tenant,
        "scope": scope,
    }
    return jwt.encode(claims, key, algorithm=GRANT_ALGORITHM), grant


def verify_grant(key: bytes, token: str, now: float | None = None) -> ViewerGrant:
    """The grant a token carries; InvalidGrant says why it is refused."""
    try:
        # Expiry is checked here against `now` (a test's clock, or the time), not by PyJWT.
        claims = jwt.decode(
            token,
            key,
            algorithms=[GRANT_ALGORITHM],
            issuer=GRANT_ISSUER,
            options={"require": list(_REQUIRED), "verify_exp": False, "verify_iat": False},
        )
    except jwt.PyJWTError as error:
        raise InvalidGrant(f"the viewer link is not valid: {error}") from error
    if not isinstance(claims["exp"], int) or claims["exp"] <= (now if now is not None else time.time()):
        raise InvalidGrant("the viewer link has expired: ask for a new one")
    scope = claims.get("scope")
    tenant = claims.get("tenant")
    if not isinstance(tenant, str) or not is_tenant(tenant):
        raise InvalidGrant("the viewer link names no tenant")
    if not isinstance(scope, dict) or len(scope) != 1:
        raise InvalidGrant("the viewer link's scope is not one study or one subject")
    study_id, subject_ref = scope.get("study_id"), scope.get("subject_ref")
    if study_id is not None and not (isinstance(study_id, str) and is_study_id(study_id)):
        raise InvalidGrant("the viewer link's study is not a study id")
    if study_id is None and not (isinstance(subject_ref, str) and subject_ref):
        raise InvalidGrant("the viewer link's scope is not one study or one subject")
    return ViewerGrant(
        tenant=tenant,
        issued_to=str(claims["sub"]),
        expires_at=int(claims["exp"]),
        study_id=study_id,
        subject_ref=subject_ref if study_id is None else None,
    )
