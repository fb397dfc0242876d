"""Reading studies for a tenant: one study, or a page of them."""

from __future__ import annotations

import base64
import json
from datetime import datetime
from typing import Any

from voxelpipe.ports import StudyStore
from voxelpipe.records import StudyRecord
from voxelpipe.status import StudyStatus


class InvalidCursor(ValueError):
    pass


def study_for_tenant(store: StudyStore, tenant: str, study_id: str) -> StudyRecord | None:
    """The study, or None when it does not exist, belongs to another tenant or was deleted."""
    record = store.get_study(study_id)
    if record is None or record.tenant != tenant or record.status == StudyStatus.DELETED:
        return None
    return record


def _encode(key: dict[str, Any] | None) -> str | None:
    return base64.urlsafe_b64encode(json.dumps(key).encode()).decode() if key else None


def _decode(cursor: str, tenant: str) -> dict[str, Any]:
    try:
        key: dict[str, Any] = json.loads(base64.urlsafe_b64decode(cursor.encode()))
    except (ValueError, json.JSONDecodeError) as error:
        raise InvalidCursor("the cursor is not one this API issued") from error
    if key.get("tenant", {}).get("S") != tenant:  # a cursor cannot reach into another tenant
        raise InvalidCursor("the cursor is not one this API issued")
    return key


def list_studies(
    store: StudyStore,
    tenant: str,
    *,
    status: StudyStatus | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = 50,
    cursor: str | None = None,
) -> tuple[list[StudyRecord], str | None]:
    """Newest first, by creation time; a page and the cursor of the next one (None at the end)."""
    page = store.tenant_studies(
        tenant,
        status=status,
        since=since,
        until=until,
        limit=limit,
        start_key=_decode(cursor, tenant) if cursor else None,
    )
    return page.items, _encode(page.next_key)
