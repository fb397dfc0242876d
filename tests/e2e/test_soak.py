"""bench/soak.py at a small N: duplicate, concurrent and failing deliveries lose nothing, leave
nothing stuck, start no second execution of an attempt, audit no event twice, and leave nothing of a
deleted study."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

SOAK_PATH = Path(__file__).resolve().parents[2] / "bench" / "soak.py"


def _soak_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("soak", SOAK_PATH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["soak"] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_a_small_soak_with_every_fault_loses_nothing_and_repeats_nothing():
    soak = _soak_module()
    # Higher odds than the long run's, so that twenty studies meet every kind of fault (the
    # planned ones for certain with this seed; a step failing after its work about 8 times).
    odds = soak.Odds(
        gpu=0.3,
        reprocess_vs_delete=0.2,
        reprocess_vs_reprocess=0.2,
        transient_failure=0.25,
        failure_after_work=0.5,
    )
    report = soak.run_soak(20, seed=4, batch=20, odds=odds)
    print(f"\n{report.text()}")
    assert report.problems() == {}, report.text()
    assert report.studies == 20 and sum(report.statuses.values()) == 20
    planned = (
        "duplicate_s3_event",
        "duplicate_dispatch",
        "sqs_redelivery",
        "concurrent_dispatch",
        "gpu_worker_killed",
        "reprocess_vs_delete",
        "reprocess_vs_reprocess",
    )
    assert all(report.faults.get(kind) for kind in planned), report.text()
    for when in ("before", "after"):  # a step failing before its work, and after it (answer lost)
        assert any(kind.startswith(f"transient_failure_{when}_") for kind in report.faults), report.text()
