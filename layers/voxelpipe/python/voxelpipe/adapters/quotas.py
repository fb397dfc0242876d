"""Per-tenant quotas in DynamoDB (QuotaRecord): the limits, and counters that change atomically.

Every counter moves by one conditional ADD (`used < limit`, or `used + n <= limit`), so concurrent
requests can never take more than the limit between them. Creating a study takes its day's count
and its declared bytes in one transaction: both or neither. The studies in flight are counted from
the studies themselves (the tenant's index, its last days only: a study is in flight for at most a
day and six hours before the reaper ends it), which is a read, not a counter: concurrent creations
may each see the same count (docs/security.md says so).
"""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from pynamodb.connection import Connection
from pynamodb.exceptions import TransactWriteError, UpdateError
from pynamodb.transactions import TransactWrite

from voxelpipe.adapters.dynamodb import refused_by_condition
from voxelpipe.quotas import (
    Quota,
    QuotaExceeded,
    day_window,
    default_limits,
    minute_window,
    parse_limits,
)
from voxelpipe.records import QuotaRecord, StudyRecord
from voxelpipe.status import StudyStatus
from voxelpipe.wiring import EnvVar

LIMITS = "limits"
STORED_BYTES = "stored_bytes"
# The statuses of a study in the pipeline (not waiting for its upload, not ended).
IN_FLIGHT = (StudyStatus.VALIDATING, StudyStatus.VALIDATED, StudyStatus.QUEUED, StudyStatus.RUNNING)
# How far back a study in flight can have been created: the reaper fails one awaiting its upload
# after a day and one running past the state machine's 6 hours (docs/operations.md).
IN_FLIGHT_LOOKBACK = timedelta(days=2)
# A tenant's limits are read at most this often by one API instance (a change reaches every
# instance within it; the instance that made it, at once).
LIMITS_CACHE_S = 60.0
_limits_cache: dict[tuple[str, str], tuple[float, dict[Quota, int]]] = {}  # (table, tenant) ->


def _counter_day(day: str) -> str:
    return f"studies#{day}"


def _counter_minute(minute: str) -> str:
    return f"requests#{minute}"


class DynamoQuotas:
    """The quotas table (EnvVar.QUOTAS_TABLE), with the deployment's defaults from the environment."""

    def __init__(self, defaults: dict[Quota, int] | None = None) -> None:
        self.defaults = defaults or default_limits(os.environ.get(EnvVar.QUOTA_DEFAULTS))

    # -- limits ---------------------------------------------------------------------------------

    def overrides(self, tenant: str) -> dict[Quota, int]:
        try:
            record = QuotaRecord.get(tenant, LIMITS, consistent_read=True)
        except QuotaRecord.DoesNotExist:
            return {}
        return parse_limits(record.limits or {})

    def limits(self, tenant: str, *, fresh: bool = False) -> dict[Quota, int]:
        """The tenant's limits: its overrides over the defaults (cached briefly unless `fresh`)."""
        key = (os.environ.get(EnvVar.QUOTAS_TABLE, ""), tenant)
        cached = _limits_cache.get(key)
        if not fresh and cached is not None and time.monotonic() - cached[0] < LIMITS_CACHE_S:
            return cached[1]
        limits = {**self.defaults, **self.overrides(tenant)}
        _limits_cache[key] = (time.monotonic(), limits)
        return limits

    def set_overrides(self, tenant: str, overrides: dict[Quota, int], actor: str) -> dict[Quota, int]:
        """Replace the tenant's overrides (an empty dict: the defaults again); its limits now."""
        QuotaRecord(
            tenant,
            LIMITS,
            limits={quota.value: value for quota, value in overrides.items()},
            updated_at=datetime.now(UTC),
            updated_by=actor,
        ).save()
        return self.limits(tenant, fresh=True)

    # -- counters -------------------------------------------------------------------------------

    def _used(self, tenant: str, counter: str) -> int:
        try:
            return int(QuotaRecord.get(tenant, counter, consistent_read=True).used or 0)
        except QuotaRecord.DoesNotExist:
            return 0

    def take_request(self, tenant: str, now: datetime) -> None:
        """Count one API request in the current minute; QuotaExceeded past the tenant's rate."""
        limit = self.limits(tenant)[Quota.REQUESTS_PER_MINUTE]
        minute, ends = minute_window(now)
        counter = _counter_minute(minute)
        if limit == 0:  # none at all (the condition below lets a first one through)
            raise QuotaExceeded(Quota.REQUESTS_PER_MINUTE, limit, 0, ends)
        try:
            QuotaRecord(tenant, counter).update(
                actions=[QuotaRecord.used.add(1), QuotaRecord.expires_at.set(ends + timedelta(minutes=5))],
                condition=QuotaRecord.used.does_not_exist() | (QuotaRecord.used < limit),
            )
        except UpdateError as error:
            if refused_by_condition(error):
                raise QuotaExceeded(
                    Quota.REQUESTS_PER_MINUTE, limit, self._used(tenant, counter), ends
                ) from None
            raise

    def in_flight(self, tenant: str, now: datetime) -> int:
        """The tenant's studies in the pipeline now (counted from its recent studies)."""
        return StudyRecord.tenant_created.count(
            tenant,
            range_key_condition=StudyRecord.created_at >= now - IN_FLIGHT_LOOKBACK,
            filter_condition=StudyRecord.status.is_in(*(status.value for status in IN_FLIGHT)),
        )

    def take_study(self, tenant: str, size_bytes: int, now: datetime) -> None:
        """Count a new study of `size_bytes` declared bytes: QuotaExceeded (and nothing counted)
        when the tenant has reached its studies in flight, its studies today, or its bytes."""
        limits = self.limits(tenant)
        running = self.in_flight(tenant, now)
        if running >= limits[Quota.CONCURRENT_STUDIES]:
            raise QuotaExceeded(Quota.CONCURRENT_STUDIES, limits[Quota.CONCURRENT_STUDIES], running)
        day, ends = day_window(now)
        daily, byte_limit = limits[Quota.STUDIES_PER_DAY], limits[Quota.STORED_BYTES]
        if daily == 0:
            raise QuotaExceeded(Quota.STUDIES_PER_DAY, daily, 0, ends)
        if size_bytes > byte_limit:  # never fits, whatever is stored
            raise QuotaExceeded(Quota.STORED_BYTES, byte_limit, self._used(tenant, STORED_BYTES))
        try:
            with TransactWrite(connection=Connection()) as transaction:
                transaction.update(
                    QuotaRecord(tenant, _counter_day(day)),
                    actions=[QuotaRecord.used.add(1), QuotaRecord.expires_at.set(ends + timedelta(days=2))],
                    condition=QuotaRecord.used.does_not_exist() | (QuotaRecord.used < daily),
                )
                transaction.update(
                    QuotaRecord(tenant, STORED_BYTES),
                    actions=[QuotaRecord.used.add(size_bytes)],
                    condition=QuotaRecord.used.does_not_exist()
                    | (QuotaRecord.used <= byte_limit - size_bytes),
                )
        except TransactWriteError as error:
            reasons = [getattr(reason, "code", None) for reason in error.cancellation_reasons or []]
            if reasons and reasons[0] == "ConditionalCheckFailed":
                raise QuotaExceeded(
                    Quota.STUDIES_PER_DAY, daily, self._used(tenant, _counter_day(day)), ends
                ) from None
            if len(reasons) > 1 and reasons[1] == "ConditionalCheckFailed":
                raise QuotaExceeded(
                    Quota.STORED_BYTES, byte_limit, self._used(tenant, STORED_BYTES)
                ) from None
            raise

    def release_bytes(self, tenant: str, size_bytes: int) -> None:
        """A deleted study's declared bytes are free again."""
        if size_bytes:
            QuotaRecord(tenant, STORED_BYTES).update(actions=[QuotaRecord.used.add(-size_bytes)])

    def usage(self, tenant: str, now: datetime) -> dict[str, Any]:
        """Each quota: its limit, what is used, and when it resets (None: as usage falls)."""
        limits = self.limits(tenant, fresh=True)
        day, day_ends = day_window(now)
        minute, minute_ends = minute_window(now)
        used = {
            Quota.STUDIES_PER_DAY: (self._used(tenant, _counter_day(day)), day_ends),
            Quota.CONCURRENT_STUDIES: (self.in_flight(tenant, now), None),
            Quota.STORED_BYTES: (self._used(tenant, STORED_BYTES), None),
            Quota.REQUESTS_PER_MINUTE: (self._used(tenant, _counter_minute(minute)), minute_ends),
        }
        return {
            quota.value: {"limit": limits[quota], "used": value, "resets_at": resets}
            for quota, (value, resets) in used.items()
        }
