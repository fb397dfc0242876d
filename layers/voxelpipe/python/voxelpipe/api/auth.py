"""Who is calling: tenant and role from the token's claims, every claim checked at the door.

Behind API Gateway, its Cognito authorizer has verified the ID token (signature, expiry) and passes
the claims in the event (`requestContext.authorizer.claims`, every value a string). Locally
(`voxelpipe serve`) the app verifies development tokens itself: HS256, signed with a secret kept on
this machine, `exp`, `iat`, `iss` and `sub` required. Either way the claims the API uses are then
checked, type and format, by one model, `Claims`:

- 401 `unauthenticated`: no token, not a JWT, a bad signature or algorithm, expired, issued in the
  future, a required claim missing, or a claim of the wrong type (groups an integer, tenant a list);
- 403 `forbidden`: a well-formed token whose `custom:tenant` is missing or is not a tenant name (the
  pattern bucket keys use, `keys.TENANT_PATTERN`), or whose groups hold no voxelpipe role.

Each problem's detail names the claim at fault.
"""

from __future__ import annotations

import os
import secrets
import time
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import jwt
from fastapi import Request
from pydantic import BaseModel, ConfigDict, Field, StrictStr, ValidationError, field_validator
from pydantic_core import PydanticCustomError

from voxelpipe.api.problems import Problem
from voxelpipe.keys import TENANT_PATTERN, is_tenant
from voxelpipe.wiring import EnvVar

TENANT_CLAIM = "custom:tenant"
GROUPS_CLAIM = "cognito:groups"
DEV_ISSUER = "voxelpipe-dev"
DEV_ALGORITHM = "HS256"
# A development token without any of these is refused (PyJWT checks exp, iat and iss too).
DEV_REQUIRED_CLAIMS = ("exp", "iat", "iss", "sub")
DEV_SECRET_FILE_ENV = "VOXELPIPE_DEV_SECRET_FILE"  # where the local signing secret is kept
DEFAULT_DEV_SECRET_FILE = Path.home() / ".config" / "voxelpipe" / "dev-token-secret"


class Role(StrEnum):
    """The Cognito groups voxelpipe knows, most capable first."""

    OPERATOR = "operator"  # runs the deployment: publishes deployment-wide models and reference data
    ADMIN = "admin"
    UPLOADER = "uploader"
    VIEWER = "viewer"


class Action(StrEnum):
    READ = "read"
    UPLOAD = "upload"  # create, complete, reprocess
    DELETE = "delete"
    MANAGE_MODELS = "manage_models"  # register, complete and retire the tenant's own models
    PUBLISH_MODELS = "publish_models"  # the same for deployment-wide models (operators only)
    # Register, complete and retire the tenant's own reference data (atlases).
    MANAGE_REFERENCES = "manage_references"
    # The same for deployment-wide reference data, norms tables among it (operators only).
    PUBLISH_REFERENCES = "publish_references"
    # Save, list, delete and try the tenant's routing rule sets (docs/rules.md).
    MANAGE_RULES = "manage_rules"
    # Add, list, read and delete the tenant's delivery destinations (docs/deliveries.md).
    MANAGE_DESTINATIONS = "manage_destinations"
    # Read the tenant's access audit (GET /audit) and its usage against its quotas (GET /usage).
    READ_AUDIT = "read_audit"
    # Set any tenant's quota limits (GET/PUT /quotas/{tenant}): operators only.
    MANAGE_QUOTAS = "manage_quotas"


PERMISSIONS: dict[Role, frozenset[Action]] = {
    Role.OPERATOR: frozenset(Action),
    Role.ADMIN: frozenset(Action) - {Action.PUBLISH_MODELS, Action.PUBLISH_REFERENCES, Action.MANAGE_QUOTAS},
    Role.UPLOADER: frozenset({Action.READ, Action.UPLOAD}),
    Role.VIEWER: frozenset({Action.READ}),
}

# Validation errors that mean "a well-formed token with no access" (403); any other is a 401.
_NO_TENANT = "no_tenant"
_NO_ROLE = "no_role"
_FORBIDDEN_ERRORS = frozenset({_NO_TENANT, _NO_ROLE})


def _group_names(value: Any) -> Any:
    """A list of group names as the token has it, or API Gateway's string forms "[a, b]" and "a,b"."""
    if value is None or value == ():  # no groups (the field's default)
        return []
    if isinstance(value, list):
        return value  # each element is checked to be a string by the field's type
    if not isinstance(value, str):
        raise PydanticCustomError("groups_type", "must be a list of group names")
    text = value.strip()
    if text.startswith("[") != text.endswith("]"):
        raise PydanticCustomError("groups_format", "unbalanced brackets in {value}", {"value": repr(value)})
    text = text.removeprefix("[").removesuffix("]").strip() if text.startswith("[") else text
    names = [name.strip() for name in text.split(",")] if text else []
    if any(not name or any(c.isspace() or c in "[]," for c in name) for name in names):
        raise PydanticCustomError(
            "groups_format", "{value} is not '[a, b]' nor 'a,b' of group names", {"value": repr(value)}
        )
    return names


class Claims(BaseModel):
    """The claims the API uses, as a verified token carries them; see the module's docstring."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    sub: Annotated[StrictStr, Field(min_length=1, max_length=256)]
    tenant: Annotated[StrictStr, Field(alias=TENANT_CLAIM, validate_default=True)] = ""
    groups: Annotated[tuple[StrictStr, ...], Field(alias=GROUPS_CLAIM, validate_default=True)] = ()

    @field_validator("tenant", mode="after")
    @classmethod
    def _tenant(cls, tenant: str) -> str:
        if not tenant:
            raise PydanticCustomError(_NO_TENANT, "the token names no tenant")
        if not is_tenant(tenant):
            raise PydanticCustomError(
                _NO_TENANT,
                "{tenant} is not a tenant (lower-case letters, digits and '-', up to 63: {pattern})",
                {"tenant": repr(tenant[:80]), "pattern": TENANT_PATTERN},
            )
        return tenant

    @field_validator("groups", mode="before")
    @classmethod
    def _groups_form(cls, value: Any) -> Any:
        return _group_names(value)

    @field_validator("groups", mode="after")
    @classmethod
    def _has_role(cls, groups: tuple[str, ...]) -> tuple[str, ...]:
        if not any(group in Role.__members__.values() for group in groups):
            raise PydanticCustomError(
                _NO_ROLE,
                "names no voxelpipe role ({roles})",
                {"roles": ", ".join(role.value for role in Role)},
            )
        return groups

    @property
    def role(self) -> Role:
        """The most capable voxelpipe role among the groups (other groups are ignored)."""
        return next(role for role in Role if role.value in self.groups)


def _claim_name(loc: tuple[int | str, ...]) -> str:
    """The claim as the token names it (a default's errors carry the field's name instead)."""
    names = {"tenant": TENANT_CLAIM, "groups": GROUPS_CLAIM}
    return ".".join(names.get(str(part), str(part)) for part in loc) or "claims"


class InvalidClaims(ValueError):
    """Claims the API refuses: `status` 401 (malformed) or 403 (no tenant or no role)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status

    @classmethod
    def of(cls, error: ValidationError) -> InvalidClaims:
        found = [(_claim_name(e["loc"]), e["msg"], e["type"]) for e in error.errors()]
        forbidden = all(kind in _FORBIDDEN_ERRORS for _, _, kind in found)
        return cls("; ".join(f"{claim}: {message}" for claim, message, _ in found), 403 if forbidden else 401)


def check_claims(claims: Any) -> Claims:
    """The claims, checked; InvalidClaims says which claim is wrong and how."""
    if not isinstance(claims, dict):
        raise InvalidClaims(f"the claims are a {type(claims).__name__}, not an object", 401)
    try:
        return Claims.model_validate(claims)
    except ValidationError as error:
        raise InvalidClaims.of(error) from error


@dataclass(frozen=True)
class Principal:
    subject: str
    tenant: str
    role: Role

    def may(self, action: Action) -> bool:
        return action in PERMISSIONS[self.role]

    def require(self, action: Action) -> None:
        if not self.may(action):
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
    """A development token `voxelpipe serve` accepts; InvalidClaims for a tenant the API would refuse."""
    now = int(time.time())
    claims = {
        "iss": DEV_ISSUER,
        "sub": subject or f"dev-{role}",
        "iat": now,
        "exp": now + ttl_s,
        TENANT_CLAIM: tenant,
        GROUPS_CLAIM: [Role(role).value],
    }
    check_claims(claims)
    return jwt.encode(claims, dev_secret(create=True), algorithm=DEV_ALGORITHM)


def dev_token_claims(token: str) -> dict[str, Any]:
    """The claims of a development token, its signature, issuer and times verified (Problem 401)."""
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            dev_secret(),
            algorithms=[DEV_ALGORITHM],
            issuer=DEV_ISSUER,
            options={"require": list(DEV_REQUIRED_CLAIMS)},
        )
    except jwt.PyJWTError as error:
        raise Problem(401, "unauthenticated", "The token is not valid", str(error)) from error
    return claims


def _principal(claims: Any) -> Principal:
    try:
        checked = check_claims(claims)
    except InvalidClaims as invalid:
        if invalid.status == 403:
            raise Problem(
                403, "forbidden", "The token names no tenant or no voxelpipe role", str(invalid)
            ) from invalid
        raise Problem(401, "unauthenticated", "The token's claims are not valid", str(invalid)) from invalid
    return Principal(subject=checked.sub, tenant=checked.tenant, role=checked.role)


def principal(request: Request) -> Principal:
    """The caller, from API Gateway's verified claims or a local development token."""
    if os.environ.get(EnvVar.AUTH_MODE, "cognito") == "dev":
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Problem(
                401, "unauthenticated", "A bearer token is required", "no Authorization: Bearer <token>"
            )
        return _principal(dev_token_claims(token.strip()))
    event = request.scope.get("aws.event") or {}
    context = event.get("requestContext") if isinstance(event, dict) else None
    authorizer = context.get("authorizer") if isinstance(context, dict) else None
    found = authorizer.get("claims") if isinstance(authorizer, dict) else None
    if not found:
        raise Problem(
            401, "unauthenticated", "No verified identity reached the API", "no claims in the request"
        )
    return _principal(found)
