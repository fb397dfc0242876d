"""The access audit in DynamoDB (AccessRecord): append a row, read a tenant's rows back by filter.

Rows are only ever put, each on the condition that its key is new (IAM allows no update or
delete of them: infra/security.grant_table). Reads are per tenant: by time (the table's key), by
actor, action or study (an index each), newest first, a page at a time.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from pynamodb.exceptions import PutError

from voxelpipe.adapters.dynamodb import refused_by_condition
from voxelpipe.ports import AccessEntry
from voxelpipe.records import AccessRecord

__all__ = ["AccessEntry", "AccessLogFull", "DynamoAccessLog", "event_key"]

# Sorts as time does: fixed width, UTC, microseconds (the sort key's first part).
TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"
# After every "#{request id}" of the same microsecond: the upper bound of a time range.
_AFTER_ANY_ID = "#~"


def event_key(at: datetime, request_id: str) -> str:
    return f"{at.astimezone(UTC).strftime(TIME_FORMAT)}#{request_id}"


class AccessLogFull(Exception):
    """The row's key was taken (the same request id at the same microsecond): never overwritten."""


class DynamoAccessLog:
    """The access audit table (EnvVar.ACCESS_AUDIT_TABLE)."""

    def __init__(self, retention_days: int | None = None) -> None:
        self.retention_days = retention_days

    def append(self, entry: AccessEntry) -> None:
        expires = entry.at + timedelta(days=self.retention_days) if self.retention_days else None
        record = AccessRecord(
            entry.tenant,
            event_key(entry.at, entry.request_id),
            at=entry.at,
            request_id=entry.request_id,
            actor=entry.actor,
            role=entry.role,
            action=entry.action,
            method=entry.method,
            route=entry.route,
            path=entry.path,
            resource=dict(entry.resource) or None,
            study_id=entry.study_id,
            status=entry.status,
            source_ip=entry.source_ip,
            user_agent=entry.user_agent,
            tenant_actor=f"{entry.tenant}#{entry.actor}",
            tenant_action=f"{entry.tenant}#{entry.action}",
            tenant_study=f"{entry.tenant}#{entry.study_id}" if entry.study_id else None,
            expires_at=expires,
        )
        try:
            record.save(condition=AccessRecord.event_key.does_not_exist())
        except PutError as error:
            if refused_by_condition(error):
                raise AccessLogFull(f"an audit row {record.event_key} exists: not overwritten") from error
            raise

    def page(
        self,
        tenant: str,
        *,
        study_id: str | None = None,
        actor: str | None = None,
        action: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 100,
        start_key: dict[str, Any] | None = None,
    ) -> tuple[list[AccessRecord], dict[str, Any] | None]:
        """A page of the tenant's rows matching every filter given, newest first, and the key to
        continue from (None on the last page). The most selective filter picks the index; the
        others filter its rows."""
        low = since.astimezone(UTC).strftime(TIME_FORMAT) if since else None
        high = until.astimezone(UTC).strftime(TIME_FORMAT) + _AFTER_ANY_ID if until else None
        key = AccessRecord.event_key
        in_range = (
            key.between(low, high) if low and high else key >= low if low else key <= high if high else None
        )
        filters = []
        query: Any
        if study_id is not None:
            query, hash_key = AccessRecord.study_time.query, f"{tenant}#{study_id}"
        elif actor is not None:
            query, hash_key = AccessRecord.actor_time.query, f"{tenant}#{actor}"
        elif action is not None:
            query, hash_key = AccessRecord.action_time.query, f"{tenant}#{action}"
        else:
            query, hash_key = AccessRecord.query, tenant
        if study_id is not None and actor is not None:
            filters.append(AccessRecord.actor == actor)
        if (study_id is not None or actor is not None) and action is not None:
            filters.append(AccessRecord.action == action)
        condition = None
        for each in filters:
            condition = each if condition is None else condition & each
        results = query(
            hash_key,
            range_key_condition=in_range,
            filter_condition=condition,
            scan_index_forward=False,
            limit=limit,
            last_evaluated_key=start_key,
        )
        rows = list(results)
        return rows, results.last_evaluated_key
