"""The access audit, for a tenant's admins (docs/security.md, "Audit"): `GET /audit`.

Rows of the caller's tenant only, newest first, filtered by study, actor, action and time, a page at
a time with an opaque cursor: the page's last key, signed (HMAC-SHA256 under a key derived from
the deployment's secret) and bound to the tenant, so a cursor cannot be forged or reach another
tenant's rows.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, Field

from voxelpipe.adapters import secrets
from voxelpipe.adapters.access_log import DynamoAccessLog
from voxelpipe.api.auth import Action
from voxelpipe.api.dependencies import Caller, requires
from voxelpipe.api.problems import Problem, invalid_request
from voxelpipe.ports import AccessLog
from voxelpipe.records import AccessRecord

router = APIRouter(tags=["audit"])

MAX_CURSOR_CHARS = 2048
_CURSOR_CONTEXT = b"voxelpipe-audit-cursor"


class AccessRow(BaseModel):
    at: datetime
    request_id: str
    actor: str = Field(description="the token's subject: a person, or a machine client")
    role: str = Field(description="the caller's role, or viewer-grant (a viewer link's holder)")
    action: str = Field(description="the route's audit action, e.g. study.read, study.results")
    method: str
    route: str = Field(description="the route's path template")
    path: str
    resource: dict[str, Any] = Field(description="the path's parameters and what the route noted")
    study_id: str | None = None
    status: int = Field(description="the HTTP status answered")
    source_ip: str
    user_agent: str | None = None


class AccessPage(BaseModel):
    items: list[AccessRow]
    next_cursor: str | None = Field(description="null on the last page")


def access_log() -> AccessLog:
    return DynamoAccessLog()


def _key() -> bytes:
    return hmac.new(secrets.webhook_secret(), _CURSOR_CONTEXT, hashlib.sha256).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def encode_cursor(tenant: str, last_key: dict[str, Any] | None) -> str | None:
    if not last_key:
        return None
    payload = json.dumps({"tenant": tenant, "key": last_key}, separators=(",", ":"), sort_keys=True).encode()
    return f"{_b64(payload)}.{_b64(hmac.new(_key(), payload, hashlib.sha256).digest())}"


def decode_cursor(tenant: str, cursor: str) -> dict[str, Any]:
    """The key a cursor carries; a 400 `invalid_cursor` for one this API did not issue to `tenant`."""
    invalid = Problem(400, "invalid_cursor", "The cursor is not valid", "not a cursor this API issued to you")
    if len(cursor) > MAX_CURSOR_CHARS:
        raise invalid
    encoded, _, mac = cursor.partition(".")
    try:
        payload = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
        signature = base64.urlsafe_b64decode(mac + "=" * (-len(mac) % 4))
    except (binascii.Error, ValueError) as error:
        raise invalid from error
    if not hmac.compare_digest(signature, hmac.new(_key(), payload, hashlib.sha256).digest()):
        raise invalid
    found = json.loads(payload)
    if found.get("tenant") != tenant or not isinstance(found.get("key"), dict):
        raise invalid
    return dict(found["key"])


def _row(record: AccessRecord) -> AccessRow:
    return AccessRow(
        at=record.at,
        request_id=record.request_id,
        actor=record.actor,
        role=record.role,
        action=record.action,
        method=record.method,
        route=record.route,
        path=record.path,
        resource=record.resource or {},
        study_id=record.study_id,
        status=int(record.status),
        source_ip=record.source_ip,
        user_agent=record.user_agent,
    )


@router.get("/audit", response_model=AccessPage, **requires(Action.READ_AUDIT, 400, audit="audit.read"))
def read_audit(
    caller: Caller,
    log: Annotated[AccessLog, Depends(access_log)],
    study: Annotated[str | None, Query(max_length=100, description="only calls on this study")] = None,
    actor: Annotated[str | None, Query(max_length=256, description="only this subject's calls")] = None,
    action: Annotated[str | None, Query(max_length=100, description="only this audit action")] = None,
    since: Annotated[
        datetime | None, Query(alias="from", description="at or after (ISO 8601 with a time zone)")
    ] = None,
    until: Annotated[datetime | None, Query(alias="to", description="at or before (ISO 8601)")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    cursor: Annotated[str | None, Query(description="next_cursor of the previous page")] = None,
) -> AccessPage:
    for name, value in (("from", since), ("to", until)):
        if value is not None and value.tzinfo is None:
            raise invalid_request(name, "give a time zone (Z or +hh:mm)")
    if since and until and since > until:
        raise invalid_request("from", "is after `to`")
    start = decode_cursor(caller.tenant, cursor) if cursor else None
    rows, last = log.page(
        caller.tenant,
        study_id=study,
        actor=actor,
        action=action,
        since=since,
        until=until,
        limit=limit,
        start_key=start,
    )
    return AccessPage(items=[_row(row) for row in rows], next_cursor=encode_cursor(caller.tenant, last))
