"""Quota limits, windows and resets (voxelpipe.quotas): pure logic."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from voxelpipe.quotas import (
    CONCURRENT_RETRY_AFTER_S,
    DEFAULT_LIMITS,
    Quota,
    QuotaExceeded,
    day_window,
    declared_bytes,
    default_limits,
    minute_window,
    parse_limits,
)

NOW = datetime(2026, 12, 5, 23, 59, 30, 500000, tzinfo=UTC)


def test_limits_are_known_quotas_of_whole_non_negative_numbers():
    assert default_limits(None) == DEFAULT_LIMITS
    assert default_limits('{"studies_per_day": 5}')[Quota.STUDIES_PER_DAY] == 5
    assert default_limits('{"studies_per_day": 5}')[Quota.STORED_BYTES] == DEFAULT_LIMITS[Quota.STORED_BYTES]
    for bad in (
        '{"studies": 5}',
        '{"studies_per_day": -1}',
        '{"studies_per_day": 1.5}',
        '{"studies_per_day": true}',
        '{"studies_per_day": "5"}',
        "[1]",
    ):
        with pytest.raises(ValueError):
            parse_limits(bad)


def test_windows_end_at_the_next_utc_midnight_and_minute():
    assert day_window(NOW) == ("2026-12-05", datetime(2026, 12, 6, tzinfo=UTC))
    assert minute_window(NOW) == ("2026-12-05T23:59", datetime(2026, 12, 6, tzinfo=UTC))


def test_retry_after_counts_to_the_reset_or_says_when_there_is_none():
    daily = QuotaExceeded(Quota.STUDIES_PER_DAY, 2, 2, datetime(2026, 12, 6, tzinfo=UTC))
    assert daily.retry_after_s(NOW) == 30  # 29.5 s, rounded up
    assert QuotaExceeded(Quota.CONCURRENT_STUDIES, 1, 1).retry_after_s(NOW) == CONCURRENT_RETRY_AFTER_S
    assert QuotaExceeded(Quota.STORED_BYTES, 10, 9).retry_after_s(NOW) is None
    assert "studies_per_day quota is 2" in str(daily)


def test_declared_bytes_add_up_the_manifest():
    assert declared_bytes([{"name": "a", "size": 3}, {"name": "b", "size": 4}]) == 7
    assert declared_bytes(None) == 0
