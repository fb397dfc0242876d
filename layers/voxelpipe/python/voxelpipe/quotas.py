"""Per-tenant quotas (docs/security.md, "Quotas"): the limits, their windows and when each resets.

Pure logic: the counters live in the quotas table (voxelpipe.adapters.quotas), the checks happen in
the API (every request: the rate; creating a study: the daily count, the studies in flight and
the stored bytes).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any


class Quota(StrEnum):
    STUDIES_PER_DAY = "studies_per_day"  # studies created per UTC day
    CONCURRENT_STUDIES = "concurrent_studies"  # studies in the pipeline at once (VALIDATING..RUNNING)
    STORED_BYTES = "stored_bytes"  # declared sizes of the studies not deleted
    REQUESTS_PER_MINUTE = "requests_per_minute"  # authenticated API requests per UTC minute


# The deployment's defaults unless CDK context `voxelpipe:quotas` says otherwise (docs/operations.md).
DEFAULT_LIMITS: dict[Quota, int] = {
    Quota.STUDIES_PER_DAY: 1000,
    Quota.CONCURRENT_STUDIES: 100,
    Quota.STORED_BYTES: 1024**4,  # 1 TiB
    Quota.REQUESTS_PER_MINUTE: 600,  # 10/s: API Gateway's stage allows 50/s for all tenants together
}
MAX_LIMIT = 10**15  # what a limit may be set to (a PB of bytes; more is a typo)


def parse_limits(value: Mapping[str, Any] | str | None) -> dict[Quota, int]:
    """Limits from JSON (or its parsed object): each a known quota, an integer 0..MAX_LIMIT.

    ValueError names the first thing wrong; missing quotas are simply absent.
    """
    found = json.loads(value) if isinstance(value, str) else dict(value or {})
    if not isinstance(found, dict):
        raise ValueError("quota limits are a JSON object")
    limits: dict[Quota, int] = {}
    for name, limit in found.items():
        if name not in Quota.__members__.values():
            raise ValueError(f"{name!r} is no quota (known: {', '.join(Quota)})")
        if isinstance(limit, bool) or not isinstance(limit, int) or not 0 <= limit <= MAX_LIMIT:
            raise ValueError(f"{name}: {limit!r} is not an integer from 0 to {MAX_LIMIT}")
        limits[Quota(name)] = limit
    return limits


def default_limits(configured: str | None) -> dict[Quota, int]:
    """DEFAULT_LIMITS, with what the deployment configured (VOXELPIPE_QUOTA_DEFAULTS) over them."""
    return {**DEFAULT_LIMITS, **parse_limits(configured or None)}


def day_window(now: datetime) -> tuple[str, datetime]:
    """The daily counter's window: its name (the UTC date) and when it ends (the next midnight)."""
    start = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return start.strftime("%Y-%m-%d"), start + timedelta(days=1)


def minute_window(now: datetime) -> tuple[str, datetime]:
    """The rate counter's window: its name (the UTC minute) and when it ends."""
    start = now.astimezone(UTC).replace(second=0, microsecond=0)
    return start.strftime("%Y-%m-%dT%H:%M"), start + timedelta(minutes=1)


# A study in flight frees its place when it ends: no fixed reset; callers are told to try again in
# this long.
CONCURRENT_RETRY_AFTER_S = 60


@dataclass(frozen=True)
class QuotaExceeded(Exception):
    """A limit reached: which, its value, what is used, and when it resets (None: when usage falls,
    e.g. studies end or are deleted)."""

    quota: Quota
    limit: int
    used: int
    resets_at: datetime | None = None

    def __str__(self) -> str:
        when = f"; it resets at {self.resets_at.isoformat()}" if self.resets_at else ""
        return f"the tenant's {self.quota} quota is {self.limit} and {self.used} is used{when}"

    def retry_after_s(self, now: datetime) -> int | None:
        """Seconds for the Retry-After header: until the reset, or CONCURRENT_RETRY_AFTER_S for the
        studies in flight; None for stored bytes (only deleting studies frees them)."""
        if self.resets_at is not None:
            return max(1, math.ceil((self.resets_at - now).total_seconds()))
        if self.quota is Quota.CONCURRENT_STUDIES:
            return CONCURRENT_RETRY_AFTER_S
        return None


def declared_bytes(manifest: list[dict[str, Any]] | None) -> int:
    """What a study's declared files add up to (what the stored-bytes quota counts)."""
    return sum(int(entry.get("size") or 0) for entry in manifest or [])
