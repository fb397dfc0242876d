"""Reading studies for a tenant: one study, or a page of them.

A page's cursor is the tenant-created index's key of its last study, signed: base64url(JSON) "."
base64url(HMAC-SHA256). The key that signs it is derived from the deployment's secret (its own
context, so a cursor signature is never a webhook signature, nor the other way round). A cursor we
did not issue — forged, edited, too long, of another tenant, or of another key shape — is refused
before it is parsed any further than its signature, so no crafted JSON reaches the JSON parser or
DynamoDB.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictStr, ValidationError

from voxelpipe.keys import is_study_id
from voxelpipe.ports import StudyStore
from voxelpipe.records import StudyRecord, SubjectRecord
from voxelpipe.status import StudyStatus

MAX_CURSOR_CHARS = 1024  # a cursor we issue is about 250 characters
_CURSOR_CONTEXT = b"voxelpipe-cursor"


class InvalidCursor(ValueError):
    pass


class _String(BaseModel):
    """A DynamoDB string value, {"S": "..."}, and nothing else."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    value: StrictStr = Field(alias="S", min_length=1, max_length=100)


class _PageKey(BaseModel):
    """The tenant-created index's key of a study: exactly these three strings."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    study_id: _String
    tenant: _String
    created_at: _String


def cursor_key(deployment_secret: bytes) -> bytes:
    """The key cursors are signed with."""
    return hmac.new(deployment_secret, _CURSOR_CONTEXT, hashlib.sha256).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(key: bytes, payload: bytes) -> bytes:
    return hmac.new(key, payload, hashlib.sha256).digest()


def encode_cursor(key: dict[str, Any] | None, signing_key: bytes) -> str | None:
    if not key:
        return None
    payload = json.dumps(key, separators=(",", ":"), sort_keys=True).encode()
    return f"{_b64(payload)}.{_b64(_mac(signing_key, payload))}"


class _SubjectPageKey(BaseModel):
    """The subjects table's key of a subject: exactly these two strings."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    tenant: _String
    subject_ref: _String


def decode_cursor(cursor: str, tenant: str, signing_key: bytes) -> dict[str, Any]:
    """The index key a cursor carries; InvalidCursor for any cursor this API did not issue to `tenant`."""
    payload = _verified(cursor, signing_key)
    # Signed by us, so well formed; checked anyway, so that a cursor of an older key shape is a 400.
    try:
        key = _PageKey.model_validate_json(payload)
    except ValidationError as error:
        raise InvalidCursor("the cursor is not a page key of this API") from error
    if key.tenant.value != tenant or not is_study_id(key.study_id.value):
        raise InvalidCursor("the cursor is not one this API issued to this tenant")
    return key.model_dump(by_alias=True)


def decode_subject_cursor(cursor: str, tenant: str, signing_key: bytes) -> dict[str, Any]:
    """The subjects table key a GET /subjects cursor carries; InvalidCursor as `decode_cursor`."""
    try:
        key = _SubjectPageKey.model_validate_json(_verified(cursor, signing_key))
    except ValidationError as error:
        raise InvalidCursor("the cursor is not a page key of GET /subjects") from error
    if key.tenant.value != tenant:
        raise InvalidCursor("the cursor is not one this API issued to this tenant")
    return key.model_dump(by_alias=True)


def _verified(cursor: str, signing_key: bytes) -> bytes:
    """The payload of a cursor whose signature is ours; InvalidCursor otherwise."""
    if len(cursor) > MAX_CURSOR_CHARS:
        raise InvalidCursor(f"the cursor is over {MAX_CURSOR_CHARS} characters: not one this API issued")
    encoded_payload, _, encoded_mac = cursor.partition(".")
    try:
        payload, mac = _unb64(encoded_payload), _unb64(encoded_mac)
    except (binascii.Error, ValueError) as error:  # not base64url, or not ASCII
        raise InvalidCursor("the cursor is not one this API issued (not base64url)") from error
    if not hmac.compare_digest(mac, _mac(signing_key, payload)):
        raise InvalidCursor("the cursor is not one this API issued (its signature does not match)")
    return payload


def study_for_tenant(store: StudyStore, tenant: str, study_id: str) -> StudyRecord | None:
    """The study, or None when it does not exist, belongs to another tenant or was deleted."""
    if not is_study_id(study_id):  # nothing else can name a study (nor reach DynamoDB's key limits)
        return None
    record = store.get_study(study_id)
    if record is None or record.tenant != tenant or record.status == StudyStatus.DELETED:
        return None
    return record


def list_studies(
    store: StudyStore,
    tenant: str,
    *,
    cursor_signing_key: bytes,
    status: StudyStatus | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = 50,
    cursor: str | None = None,
) -> tuple[list[StudyRecord], str | None]:
    """Newest first, by creation time; a page and the cursor of the next one (None at the end).

    `cursor_signing_key` (cursor_key) signs the cursors issued and checks the one given."""
    start = decode_cursor(cursor, tenant, cursor_signing_key) if cursor else None
    page = store.tenant_studies(
        tenant,
        status=status,
        since=since,
        until=until,
        limit=limit,
        start_key=start,
    )
    return page.items, encode_cursor(page.next_key, cursor_signing_key)


def list_subjects(
    store: StudyStore, tenant: str, *, cursor_signing_key: bytes, limit: int = 50, cursor: str | None = None
) -> tuple[list[SubjectRecord], str | None]:
    """A tenant's subjects by subject_ref; a page and the cursor of the next one (None at the end)."""
    start = decode_subject_cursor(cursor, tenant, cursor_signing_key) if cursor else None
    page = store.tenant_subjects(tenant, limit=limit, start_key=start)
    return page.items, encode_cursor(page.next_key, cursor_signing_key)


def tenant_records(
    store: StudyStore, tenant: str, *, max_records: int, page_size: int = 200
) -> Iterator[StudyRecord]:
    """The tenant's studies (not deleted ones), newest first, up to `max_records`: read a page at
    a time through the tenant's index, never across tenants."""
    start: dict[str, Any] | None = None
    read = 0
    while read < max_records:
        page = store.tenant_studies(
            tenant,
            status=None,
            since=None,
            until=None,
            limit=min(page_size, max_records - read),
            start_key=start,
        )
        yield from page.items
        read += len(page.items)
        if page.next_key is None or not page.items:
            return
        start = page.next_key
