"""Timing shared by the benchmarks: the best of several runs, the garbage collector kept out.

Between runs the collector clears what the last run left, with everything that existed before
the timing frozen (`gc.freeze`), so a collection walks only the runs' objects: the heap the
benchmark's imports built (nibabel alone brings pydicom's dictionaries, ~42,000 tracked objects
and ~25 ms a full collection) is not walked after every run.
"""

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
    gc.collect()
    gc.freeze()  # the objects alive now are not the runs' garbage: collections skip them
    try:
        for _ in range(repeat):
            start = time.perf_counter()
            run()
            best = min(best, time.perf_counter() - start)
            gc.collect()
    finally:
        gc.unfreeze()
        gc.enable()
    return best
