"""How many threads one analysis may use, and setting torch and BLAS to it.

torch and OpenBLAS size their thread pools from the host's CPU count, which inside a Lambda, a
container with a CPU quota or a process pinned to some cores is more than the process gets; and
analyses running side by side each take a full pool. Every thread past the CPUs really there is
oversubscription: torch's OpenMP regions end at a barrier, so one thread waiting for a CPU stalls
the rest (measured: `segment()` with 2 threads on a busy 2-core machine 2-6x slower than with 1,
same labels). The budget is

    threads = max(1, cpus // analyses running at once)

where `cpus` is the least of: the CPUs this process may run on (`os.sched_getaffinity`), the
container's CPU quota (cgroup v2 `cpu.max`, v1 `cpu.cfs_quota_us / cpu.cfs_period_us`, rounded
down: a thread past the quota is throttled mid-region), in a Lambda the vCPUs its memory buys
(1769 MB = 1 vCPU, 6 at 10240 MB), and, when those allow more than one, the CPUs left idle by
everything else: /proc/stat sampled over 0.1 s on this process's CPUs, before the analysis starts
(a Lambda or a Batch job finds them idle; a shared development machine often does not, and there
a second thread that waits for a busy CPU costs more than it brings: 2 threads took 3.2 s with a
core free, 21 s with both busy, against 3.9-4.2 s for 1). `VOXELPIPE_ANALYSIS_THREADS` overrides
it (per analysis, not divided): the local cloud's worker processes, the tests and the benchmarks
set 1.

Pure where it counts: `thread_budget` takes the environment, the affinity, the cgroup folder and
the busy-CPU sampler as parameters (defaults: the real ones), so the unit tests run it on fakes.
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

__all__ = [
    "ITK_THREADS_ENV",
    "THREADS_ENV",
    "ThreadBudget",
    "affinity_cpus",
    "apply_thread_budget",
    "busy_cpus",
    "cgroup_cpu_quota",
    "lambda_vcpus",
    "sample_busy_cpus",
    "thread_budget",
]

THREADS_ENV: Final = "VOXELPIPE_ANALYSIS_THREADS"
LAMBDA_MEMORY_ENV: Final = "AWS_LAMBDA_FUNCTION_MEMORY_SIZE"  # MB, set by the Lambda runtime
LAMBDA_MB_PER_VCPU: Final = 1769  # AWS: a function with 1769 MB has the equivalent of one vCPU
LAMBDA_MAX_VCPUS: Final = 6  # at 10240 MB, the most memory a function can have
CGROUP_ROOT: Final = Path("/sys/fs/cgroup")
PROC_STAT: Final = Path("/proc/stat")
BUSY_SAMPLE_S: Final = 0.1  # /proc/stat counts in 10 ms ticks: 10 a CPU in the window
# Busy CPUs below this much of one are noise (daemons, this process's own bookkeeping): they do
# not cost a thread.
BUSY_TOLERANCE: Final = 0.3
# What OpenMP, the BLAS libraries and ITK (SimpleITK: tissue-seg's N4) read when they load: for
# those a process loads after the budget is applied (torch is imported on an analysis' first use).
ITK_THREADS_ENV: Final = "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"
THREAD_ENV_VARS: Final = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", ITK_THREADS_ENV)


@dataclass(frozen=True)
class ThreadBudget:
    threads: int  # per analysis
    cpus: int  # what the process really has (the override: what it was told)
    # Which bound set `cpus`: affinity, cgroup quota, lambda memory, busy elsewhere, or THREADS_ENV.
    limited_by: str
    concurrent: int  # analyses running at once, sharing `cpus`


def affinity_cpus() -> int:
    """The CPUs this process may run on (all of the host's where the platform cannot say)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def cgroup_cpu_quota(root: Path = CGROUP_ROOT) -> float | None:
    """The container's CPU quota in CPUs (e.g. 1.5), or None when it has none.

    cgroup v2: `cpu.max` holds "QUOTA PERIOD" ("max PERIOD": no quota). cgroup v1: the cpu
    controller's `cpu.cfs_quota_us` (-1: no quota) over `cpu.cfs_period_us`. Read at `root`, the
    process's own cgroup inside a container (cgroup namespaces).
    """
    v2 = _read(root / "cpu.max")
    if v2 is not None:
        fields = v2.split()
        if len(fields) == 2 and fields[0] != "max":
            return _quota(fields[0], fields[1])
        return None
    for controller in ("cpu", "cpu,cpuacct", "cpuacct,cpu"):
        quota = _read(root / controller / "cpu.cfs_quota_us")
        period = _read(root / controller / "cpu.cfs_period_us")
        if quota is not None and period is not None:
            return _quota(quota, period)
    return None


def _quota(quota: str, period: str) -> float | None:
    try:
        q, p = int(quota), int(period)
    except ValueError:
        return None
    return q / p if q > 0 and p > 0 else None


def lambda_vcpus(environ: Mapping[str, str]) -> int | None:
    """The vCPUs a Lambda function's memory buys (None outside Lambda): memory / 1769 MB rounded,
    between 1 and 6."""
    memory = environ.get(LAMBDA_MEMORY_ENV)
    if not memory:
        return None
    try:
        megabytes = int(memory)
    except ValueError:
        return None
    return max(1, min(LAMBDA_MAX_VCPUS, round(megabytes / LAMBDA_MB_PER_VCPU)))


def _cpu_ticks(stat: str, cpus: Collection[int] | None) -> tuple[int, int, int]:
    """(busy, total, CPUs counted) from /proc/stat's per-CPU lines, over `cpus` (None: all)."""
    busy = total = counted = 0
    for line in stat.splitlines():
        name, _, rest = line.partition(" ")
        if not (name.startswith("cpu") and name[3:].isdigit()):
            continue
        if cpus is not None and int(name[3:]) not in cpus:
            continue
        # user nice system idle iowait irq softirq steal (guest time is inside user already)
        ticks = [int(v) for v in rest.split()[:8]]
        idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)
        busy += sum(ticks) - idle
        total += sum(ticks)
        counted += 1
    return busy, total, counted


def busy_cpus(before: str, after: str, cpus: Collection[int] | None = None) -> float | None:
    """How many of `cpus` were busy between two readings of /proc/stat (None: no ticks between)."""
    busy0, total0, counted = _cpu_ticks(before, cpus)
    busy1, total1, _ = _cpu_ticks(after, cpus)
    if counted == 0 or total1 <= total0:
        return None
    return counted * max(0, busy1 - busy0) / (total1 - total0)


def sample_busy_cpus(window_s: float = BUSY_SAMPLE_S, stat: Path = PROC_STAT) -> float | None:
    """The CPUs (of this process's) that other work kept busy over `window_s`; this thread sleeps
    meanwhile. None where /proc/stat cannot be read (not Linux)."""
    cpus = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    before = _read(stat)
    if before is None:
        return None
    time.sleep(window_s)
    after = _read(stat)
    return None if after is None else busy_cpus(before, after, cpus)


def thread_budget(
    concurrent: int = 1,
    environ: Mapping[str, str] | None = None,
    affinity: int | None = None,
    cgroup_root: Path = CGROUP_ROOT,
    others_busy: Callable[[], float | None] = sample_busy_cpus,
) -> ThreadBudget:
    """The threads each of `concurrent` analyses may use (see the module docstring).

    Raises ValueError when `VOXELPIPE_ANALYSIS_THREADS` is set but not a positive integer: a
    misconfigured deployment says so rather than running at a guess.
    """
    env = os.environ if environ is None else environ
    concurrent = max(1, concurrent)
    override = env.get(THREADS_ENV, "").strip()
    if override:
        try:
            threads = int(override)
        except ValueError:
            threads = 0
        if threads < 1:
            raise ValueError(f"{THREADS_ENV} must be a positive integer, got {override!r}")
        return ThreadBudget(threads=threads, cpus=threads, limited_by=THREADS_ENV, concurrent=concurrent)
    bounds: list[tuple[int, str]] = [(affinity if affinity is not None else affinity_cpus(), "affinity")]
    quota = cgroup_cpu_quota(cgroup_root)
    if quota is not None:
        bounds.append((max(1, math.floor(quota)), "cgroup quota"))
    vcpus = lambda_vcpus(env)
    if vcpus is not None:
        bounds.append((vcpus, "lambda memory"))
    cpus, limited_by = min(bounds, key=lambda bound: bound[0])  # the first of equal bounds
    cpus = max(1, cpus)
    if cpus > 1:  # with one CPU there is nothing to take back, and no sampling to wait for
        busy = others_busy()
        if busy is not None:
            idle = max(1, math.floor(cpus - busy + BUSY_TOLERANCE))
            if idle < cpus:
                cpus, limited_by = idle, "busy elsewhere"
    return ThreadBudget(
        threads=max(1, cpus // concurrent), cpus=cpus, limited_by=limited_by, concurrent=concurrent
    )


def apply_thread_budget(threads: int) -> None:
    """Size torch's intra-op pool, SimpleITK's threads and the BLAS pools to `threads`, for this
    process.

    torch, when loaded, through `torch.set_num_threads` (else `OMP_NUM_THREADS`, which it reads on
    import); SimpleITK, when loaded, through `ProcessObject.SetGlobalDefaultNumberOfThreads` (else
    `ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS`, which it reads on import); BLAS libraries already
    loaded (numpy's OpenBLAS) through threadpoolctl where it is installed, those loaded later
    through their environment variables. torch's inter-op pool is left alone: no analysis forks
    inter-op work, and `set_num_interop_threads` raises once any
    inter-op work has started.
    """
    if threads < 1:
        raise ValueError(f"threads must be at least 1, got {threads}")
    for name in THREAD_ENV_VARS:
        os.environ[name] = str(threads)
    torch = sys.modules.get("torch")
    if torch is not None and torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    sitk = sys.modules.get("SimpleITK")
    if sitk is not None:
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(threads)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # not installed: the environment variables above do what they can
        return
    threadpool_limits(limits=threads, user_api="blas")
