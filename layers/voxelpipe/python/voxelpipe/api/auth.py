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

Machine clients (docs/security.md) call with an OAuth 2.0 client-credentials access token
(`token_use: access`, `client_id`, `scope`), under the `/machine` base path. Such a token names no
tenant: the API looks its client id up in the machine-clients table (tenant, scopes, expiry). People
are authorised by role (PERMISSIONS), machines by scope (SCOPE_OF), both in `Principal.require`:

- 401 `unauthenticated`: an unknown (or deleted) client, a person's token under /machine or a
  machine's outside it; 401 `client_expired`: a client past its expiry;
- 403 `forbidden`: the token lacks the route's scope (the detail names it), or the route is for
  people only.
"""

from __future__ import annotations

import os
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

import jwt
from fastapi import Depends, Request
from pydantic import BaseModel, ConfigDict, Field, StrictStr, ValidationError, field_validator
from pydantic_core import PydanticCustomError

from voxelpipe.adapters.machine_clients import DynamoMachineClients
from voxelpipe.api.problems import Problem
from voxelpipe.keys import TENANT_PATTERN, is_tenant
from voxelpipe.machine_clients import MachineClient, Scope, scopes_of
from voxelpipe.ports import MachineClients
from voxelpipe.wiring import EnvVar

TENANT_CLAIM = "custom:tenant"
GROUPS_CLAIM = "cognito:groups"
TOKEN_USE_CLAIM = "token_use"  # "id": a person's ID token; "access": a machine client's
MACHINE_PREFIX = "/machine"  # machine clients' base path (API Gateway checks their scopes there)
MACHINE_SCOPE_KEY = "voxelpipe.machine"  # set in the ASGI scope of a request under MACHINE_PREFIX
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
    # Reprocess a query's worth of the tenant's studies at once (POST /reprocess-batches).
    REPROCESS_BATCHES = "reprocess_batches"
    STOW = "stow"  # store DICOM instances (STOW-RS): people as UPLOAD, machines by their own scope
    # Create, list and delete the tenant's machine clients (docs/security.md).
    MANAGE_CLIENTS = "manage_clients"
    # Read the tenant's access audit (GET /audit) and its usage against its quotas (GET /usage).
    READ_AUDIT = "read_audit"
    # Set any tenant's quota limits (GET/PUT /quotas/{tenant}): operators only.
    MANAGE_QUOTAS = "manage_quotas"


PERMISSIONS: dict[Role, frozenset[Action]] = {
    Role.OPERATOR: frozenset(Action),
    Role.ADMIN: frozenset(Action) - {Action.PUBLISH_MODELS, Action.PUBLISH_REFERENCES, Action.MANAGE_QUOTAS},
    Role.UPLOADER: frozenset({Action.READ, Action.UPLOAD, Action.STOW}),
    Role.VIEWER: frozenset({Action.READ}),
}

# The scope a machine client needs for each action; None: people only. Publishing deployment-wide
# data is an operator's (a person's) act, and a machine never makes machines (a leaked secret must
# not mint more). Every action is here (tests/unit/test_machine_scopes.py holds it).
SCOPE_OF: dict[Action, Scope | None] = {
    Action.READ: Scope.STUDIES_READ,
    Action.UPLOAD: Scope.STUDIES_WRITE,
    Action.DELETE: Scope.STUDIES_DELETE,
    Action.STOW: Scope.DICOMWEB_STOW,
    Action.MANAGE_MODELS: Scope.MODELS_MANAGE,
    Action.MANAGE_REFERENCES: Scope.REFERENCES_MANAGE,
    Action.MANAGE_RULES: Scope.RULES_MANAGE,
    Action.MANAGE_DESTINATIONS: Scope.DESTINATIONS_MANAGE,
    Action.PUBLISH_MODELS: None,
    Action.PUBLISH_REFERENCES: None,
    Action.MANAGE_CLIENTS: None,
    # Bulk reprocess selects by query across the tenant: an admin's decision, people only.
    Action.REPROCESS_BATCHES: None,
    # The access audit and the quotas are the tenant admin's and the operator's: people only.
    Action.READ_AUDIT: None,
    Action.MANAGE_QUOTAS: None,
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
    # Cognito's ID tokens say "id"; development tokens from before machine clients say nothing.
    token_use: Annotated[Literal["id"], Field(alias=TOKEN_USE_CLAIM)] = "id"

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
    names = {"tenant": TENANT_CLAIM, "groups": GROUPS_CLAIM, "token_use": TOKEN_USE_CLAIM}
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


class MachineClaims(BaseModel):
    """The claims of a machine client's access token (client credentials) the API uses."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    client_id: Annotated[StrictStr, Field(min_length=1, max_length=128)]
    scope: StrictStr = ""
    token_use: Literal["access"]


@dataclass(frozen=True)
class Principal:
    """Who calls: a person (`role`) or a machine client (`client`, `scopes`), of a tenant."""

    subject: str
    tenant: str
    role: Role | None
    scopes: frozenset[Scope] = frozenset()
    client: str | None = None  # a machine client's name

    @property
    def is_machine(self) -> bool:
        return self.role is None

    def may(self, action: Action) -> bool:
        if self.role is not None:
            return action in PERMISSIONS[self.role]
        scope = SCOPE_OF.get(action)  # an action without a scope is for people only
        return scope is not None and scope in self.scopes

    def require(self, action: Action) -> None:
        if self.may(action):
            return
        if self.role is not None:
            raise Problem(403, "forbidden", "Not allowed", f"the {self.role} role may not {action}")
        scope = SCOPE_OF.get(action)
        detail = (
            f"machine client {self.client!r} lacks the scope {scope.full_name}"
            if scope is not None
            else f"{action} is for people only: no scope allows a machine client it"
        )
        raise Problem(403, "forbidden", "Not allowed", detail)


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
        # Each token its own, as Cognito's are: two minted within one second (a sign-in and its
        # refresh) would otherwise be the same string.
        "jti": secrets.token_hex(8),
        TENANT_CLAIM: tenant,
        GROUPS_CLAIM: [Role(role).value],
    }
    check_claims(claims)
    return jwt.encode(claims, dev_secret(create=True), algorithm=DEV_ALGORITHM)


def mint_dev_access_token(client_id: str, scopes: frozenset[Scope], ttl_s: int = 3600) -> str:
    """A machine client's development access token, as Cognito's client-credentials grant gives
    one (`token_use: access`, `client_id`, `scope`; no tenant: the API looks the client up)."""
    now = int(time.time())
    claims = {
        "iss": DEV_ISSUER,
        "sub": client_id,
        "iat": now,
        "exp": now + ttl_s,
        TOKEN_USE_CLAIM: "access",
        "client_id": client_id,
        "scope": " ".join(sorted(scope.full_name for scope in scopes)),
    }
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


def machine_client_store() -> MachineClients:
    return DynamoMachineClients()


def _person(claims: dict[str, Any]) -> Principal:
    try:
        checked = check_claims(claims)
    except InvalidClaims as invalid:
        if invalid.status == 403:
            raise Problem(
                403, "forbidden", "The token names no tenant or no voxelpipe role", str(invalid)
            ) from invalid
        raise Problem(401, "unauthenticated", "The token's claims are not valid", str(invalid)) from invalid
    return Principal(subject=checked.sub, tenant=checked.tenant, role=checked.role)


def _machine(claims: dict[str, Any], clients: MachineClients) -> Principal:
    """A machine client: its tenant and scopes from its record, the scopes also in its token."""
    try:
        checked = MachineClaims.model_validate(claims)
    except ValidationError as error:
        found = "; ".join(f"{_claim_name(e['loc'])}: {e['msg']}" for e in error.errors())
        raise Problem(401, "unauthenticated", "The token's claims are not valid", found) from error
    client: MachineClient | None = clients.get(checked.client_id)
    if client is None:
        raise Problem(
            401, "unauthenticated", "Unknown machine client", f"no machine client {checked.client_id!r}"
        )
    now = datetime.now(UTC)
    if client.expired(now):
        raise Problem(
            401,
            "client_expired",
            "The machine client has expired",
            f"machine client {client.name!r} of {client.tenant} expired at "
            f"{client.expires_at.isoformat()}: create a new one and delete this one",
        )
    return Principal(
        subject=client.client_id,
        tenant=client.tenant,
        role=None,
        scopes=client.scopes & scopes_of(checked.scope),
        client=client.name,
    )


def _principal(claims: Any, clients: MachineClients, machine_path: bool) -> Principal:
    """People by their ID token's claims outside /machine; machines by their access token's under
    it (API Gateway's authorizers take the same split)."""
    if not isinstance(claims, dict):
        raise Problem(401, "unauthenticated", "The token's claims are not valid", "not an object")
    machine = claims.get(TOKEN_USE_CLAIM) == "access"
    if machine and not machine_path:
        raise Problem(
            401,
            "unauthenticated",
            "A machine client's token outside /machine",
            f"machine clients call the API under its {MACHINE_PREFIX} base path",
        )
    if machine_path and not machine:
        raise Problem(
            401,
            "unauthenticated",
            "Not a machine client's token",
            f"{MACHINE_PREFIX} takes machine clients' access tokens (client credentials) only",
        )
    return _machine(claims, clients) if machine else _person(claims)


def principal(
    request: Request, clients: Annotated[MachineClients, Depends(machine_client_store)]
) -> Principal:
    """The caller, from API Gateway's verified claims or a local development token."""
    machine_path = bool(request.scope.get(MACHINE_SCOPE_KEY))
    if os.environ.get(EnvVar.AUTH_MODE, "cognito") == "dev":
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Problem(
                401, "unauthenticated", "A bearer token is required", "no Authorization: Bearer <token>"
            )
        return _principal(dev_token_claims(token.strip()), clients, machine_path)
    event = request.scope.get("aws.event") or {}
    context = event.get("requestContext") if isinstance(event, dict) else None
    authorizer = context.get("authorizer") if isinstance(context, dict) else None
    found = authorizer.get("claims") if isinstance(authorizer, dict) else None
    if not found:
        raise Problem(
            401, "unauthenticated", "No verified identity reached the API", "no claims in the request"
        )
    return _principal(found, clients, machine_path)
