"""Timing shared by the benchmarks: the best of several runs, the garbage collector kept out."""

from __future__ import annotations

import gc
import time
from collections.abc import Callable


def best_s(run: Callable[[], object], repeat: int, warmup: bool = True) -> float:
    """Best of `repeat` timed runs (after one warm-up), in seconds; GC off while timing."""
    if warmup:
        run()
    best = float("inf")
    gc.disable()
    try:
        for _ in range(repeat):
            start = time.perf_counter()
            run()
            best = min(best, time.perf_counter() - start)
            gc.collect()
    finally:
        gc.enable()
    return best
