"""Who is calling: tenant and role from the JWT's claims.

Behind API Gateway, its Cognito authorizer has verified the ID token and passes the claims in
the event (`requestContext.authorizer.claims`); the app trusts them. Locally (`voxelpipe serve`)
the app verifies development tokens itself: HS256, signed with a secret kept on this machine,
carrying the same claims (`custom:tenant`, `cognito:groups`).
"""

from __future__ import annotations

import os
import secrets
import time
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import jwt
from fastapi import Request

from voxelpipe.api.problems import Problem
from voxelpipe.wiring import EnvVar

TENANT_CLAIM = "custom:tenant"
GROUPS_CLAIM = "cognito:groups"
DEV_ISSUER = "voxelpipe-dev"
DEV_SECRET_FILE_ENV = "VOXELPIPE_DEV_SECRET_FILE"  # where the local signing secret is kept
DEFAULT_DEV_SECRET_FILE = Path.home() / ".config" / "voxelpipe" / "dev-token-secret"


class Role(StrEnum):
    ADMIN = "admin"
    UPLOADER = "uploader"
    VIEWER = "viewer"


class Action(StrEnum):
    READ = "read"
    UPLOAD = "upload"  # create, complete, reprocess
    DELETE = "delete"
    MANAGE_MODELS = "manage_models"  # register models (admin only)


PERMISSIONS: dict[Role, frozenset[Action]] = {
    Role.ADMIN: frozenset(Action),
    Role.UPLOADER: frozenset({Action.READ, Action.UPLOAD}),
    Role.VIEWER: frozenset({Action.READ}),
}


@dataclass(frozen=True)
class Principal:
    subject: str
    tenant: str
    role: Role

    def require(self, action: Action) -> None:
        if action not in PERMISSIONS[self.role]:
            raise Problem(403, "forbidden", "Not allowed", f"the {self.role} role may not {action}")


def dev_secret(create: bool = False) -> str:
    """The local signing secret (created on first use, readable by this user only)."""
    path = Path(os.environ.get(DEV_SECRET_FILE_ENV) or DEFAULT_DEV_SECRET_FILE)
    if not path.exists():
        if not create:
            raise Problem(401, "unauthenticated", "No development tokens were issued on this machine")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_text(secrets.token_urlsafe(48))
    return path.read_text().strip()


def mint_dev_token(tenant: str, role: Role, subject: str | None = None, ttl_s: int = 12 * 3600) -> str:
    now = int(time.time())
    claims = {
        "iss": DEV_ISSUER,
        "sub": subject or f"dev-{role}",
        "iat": now,
        "exp": now + ttl_s,
        TENANT_CLAIM: tenant,
        GROUPS_CLAIM: [role.value],
    }
    return jwt.encode(claims, dev_secret(create=True), algorithm="HS256")


def _principal(claims: dict[str, Any]) -> Principal:
    tenant = claims.get(TENANT_CLAIM)
    groups = claims.get(GROUPS_CLAIM) or []
    if isinstance(groups, str):  # API Gateway passes lists as "[a, b]" or "a,b"
        groups = [g.strip(" []") for g in groups.split(",")]
    roles = [Role(g) for g in groups if g in Role.__members__.values()]
    if not tenant or not roles:
        raise Problem(403, "forbidden", "The token names no tenant or no voxelpipe role")
    # The most capable role the user holds.
    role = min(roles, key=list(Role).index)
    return Principal(subject=str(claims.get("sub", "unknown")), tenant=str(tenant), role=role)


def principal(request: Request) -> Principal:
    """The caller, from API Gateway's verified claims or a local development token."""
    if os.environ.get(EnvVar.AUTH_MODE, "cognito") == "dev":
        header = request.headers.get("authorization", "")
        if not header.lower().startswith("bearer "):
            raise Problem(401, "unauthenticated", "A bearer token is required")
        try:
            claims = jwt.decode(header[7:], dev_secret(), algorithms=["HS256"], issuer=DEV_ISSUER)
        except jwt.PyJWTError as error:
            raise Problem(401, "unauthenticated", "The token is not valid", str(error)) from error
        return _principal(claims)
    event = request.scope.get("aws.event") or {}
    claims = (event.get("requestContext") or {}).get("authorizer", {}).get("claims")
    if not claims:
        raise Problem(401, "unauthenticated", "No verified identity reached the API")
    return _principal(claims)
