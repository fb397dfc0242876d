"""Validation's peak memory stays under the documented bound whatever the upload (memory, not time).

Each case runs tests/integration/validation_memory_probe.py in a process of its own, which
validates one large upload through the streaming check ingest uses and reports how far that
raised the process's high-water mark.  Before validation streamed, the first case peaked at
4.0 GiB and the uncompressed one at twice its size.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from voxelpipe.limits import VALIDATION_PEAK_BYTES

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="Linux /proc needed")


def _probe(case: str, *extra: str) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-m", "tests.integration.validation_memory_probe", case, *extra],
        cwd=ROOT,
        env=os.environ.copy(),
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


@pytest.mark.parametrize(
    ("case", "extra", "outcome"),
    [
        # 2.1 MB of gzip declaring 1024 x 1024 x 256 float64 voxels with scl_slope=2; validated
        # under limits that let its 2 GiB through, so that all of it is decoded and checked.
        ("declared_huge", ("--max-voxels", str(2**28)), "accepted"),
        ("bomb", (), "decompression_bomb"),
        ("large_raw", (), "accepted"),  # 128 MiB uncompressed, the most voxels the limits take
        ("overflow_raw", (), "non_finite_data"),  # every voxel scaled in float64 and counted
        ("max_extensions", (), "accepted"),  # 16 MiB of header extensions, read whole
    ],
)
def test_validation_peak_memory_is_bounded(case: str, extra: tuple[str, ...], outcome: str) -> None:
    result = _probe(case, *extra)
    assert result["streaming"] is True
    assert result["outcome"] == outcome
    peak = result["peak_delta_bytes"]
    assert isinstance(peak, int)
    assert peak < VALIDATION_PEAK_BYTES, f"{case}: validation added {peak / 2**20:.1f} MiB"
