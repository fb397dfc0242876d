"""The thread budget: the CPUs a process really has (affinity, cgroup quota, Lambda memory),
shared by the analyses running at once, and the override; on fake inputs."""

from __future__ import annotations

import os

import pytest

from voxelpipe.thread_budget import (
    ITK_THREADS_ENV,
    THREAD_ENV_VARS,
    THREADS_ENV,
    apply_thread_budget,
    busy_cpus,
    cgroup_cpu_quota,
    lambda_vcpus,
    thread_budget,
)


def budget_of(*args, others_busy=lambda: None, **kwargs):
    """thread_budget with nothing else busy (None: not sampled) unless the test says otherwise."""
    return thread_budget(*args, others_busy=others_busy, **kwargs)


def _cgroup_v2(root, content: str):
    root.mkdir()
    (root / "cpu.max").write_text(content + "\n")
    return root


def _cgroup_v1(root, quota: str, period: str = "100000", controller: str = "cpu,cpuacct"):
    folder = root / controller
    folder.mkdir(parents=True)
    (folder / "cpu.cfs_quota_us").write_text(quota + "\n")
    (folder / "cpu.cfs_period_us").write_text(period + "\n")
    return root


def test_cgroup_quotas(tmp_path):
    assert cgroup_cpu_quota(tmp_path) is None  # no cgroup files: no quota
    assert cgroup_cpu_quota(_cgroup_v2(tmp_path / "a", "max 100000")) is None
    assert cgroup_cpu_quota(_cgroup_v2(tmp_path / "b", "150000 100000")) == 1.5
    assert cgroup_cpu_quota(_cgroup_v1(tmp_path / "c", "-1")) is None
    assert cgroup_cpu_quota(_cgroup_v1(tmp_path / "d", "300000", controller="cpu")) == 3.0
    assert cgroup_cpu_quota(_cgroup_v2(tmp_path / "e", "garbage")) is None


@pytest.mark.parametrize(
    ("memory", "vcpus"),
    [("128", 1), ("1769", 1), ("3008", 2), ("3538", 2), ("5307", 3), ("10240", 6), ("20000", 6)],
)
def test_lambda_memory_buys_vcpus(memory, vcpus):
    assert lambda_vcpus({"AWS_LAMBDA_FUNCTION_MEMORY_SIZE": memory}) == vcpus


def test_outside_lambda_memory_says_nothing():
    assert lambda_vcpus({}) is None
    assert lambda_vcpus({"AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "lots"}) is None


def test_the_least_bound_wins(tmp_path):
    none = tmp_path / "none"  # no cgroup files
    assert budget_of(environ={}, affinity=8, cgroup_root=none).threads == 8
    budget = budget_of(environ={}, affinity=8, cgroup_root=_cgroup_v2(tmp_path / "a", "250000 100000"))
    assert (budget.threads, budget.cpus, budget.limited_by) == (2, 2, "cgroup quota")  # 2.5 rounds down
    lam = {"AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "1769"}
    budget = budget_of(environ=lam, affinity=2, cgroup_root=none)  # Lambda shows 2 CPUs at 1 vCPU
    assert (budget.threads, budget.limited_by) == (1, "lambda memory")
    budget = budget_of(environ={"AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "10240"}, affinity=2, cgroup_root=none)
    assert (budget.threads, budget.limited_by) == (2, "affinity")
    # A quota under one CPU still leaves one thread.
    small = _cgroup_v2(tmp_path / "b", "50000 100000")
    assert budget_of(environ={}, affinity=4, cgroup_root=small).threads == 1


def test_analyses_at_once_share_the_cpus(tmp_path):
    none = tmp_path / "none"
    assert [budget_of(n, environ={}, affinity=8, cgroup_root=none).threads for n in (1, 2, 3, 8, 20)] == [
        8,
        4,
        2,
        1,
        1,
    ]
    assert budget_of(0, environ={}, affinity=8, cgroup_root=none).threads == 8


def test_the_override_wins_and_is_checked(tmp_path):
    none = tmp_path / "none"
    budget = budget_of(4, environ={THREADS_ENV: "1"}, affinity=16, cgroup_root=none)
    assert (budget.threads, budget.limited_by) == (1, THREADS_ENV)  # per analysis: not divided
    assert budget_of(environ={THREADS_ENV: " 3 "}, affinity=1, cgroup_root=none).threads == 3
    assert budget_of(environ={THREADS_ENV: ""}, affinity=5, cgroup_root=none).threads == 5
    for bad in ("0", "-2", "two", "1.5"):
        with pytest.raises(ValueError, match=THREADS_ENV):
            budget_of(environ={THREADS_ENV: bad}, affinity=2, cgroup_root=none)


def test_the_real_system_gives_a_budget():
    budget = thread_budget(environ={})  # the real affinity, cgroup and /proc/stat
    assert 1 <= budget.threads == budget.cpus


STAT_BEFORE = """cpu  300 0 30 900 10 0 0 0 0 0
cpu0 100 0 10 300 0 0 0 0 0 0
cpu1 100 0 10 300 10 0 0 0 0 0
cpu2 100 0 10 300 0 0 0 0 0 0
intr 12345
"""
# 10 ticks a CPU later: cpu0 busy throughout, cpu1 idle (half of it iowait), cpu2 busy 3 of 10.
STAT_AFTER = """cpu  313 0 30 917 15 0 0 0 0 0
cpu0 108 0 10 300 0 0 2 0 0 0
cpu1 100 0 10 305 15 0 0 0 0 0
cpu2 103 0 10 307 0 0 0 0 0 0
intr 12399
"""


def test_busy_cpus_from_proc_stat():
    assert busy_cpus(STAT_BEFORE, STAT_AFTER) == pytest.approx(1.3)
    assert busy_cpus(STAT_BEFORE, STAT_AFTER, {0, 1}) == pytest.approx(1.0)
    assert busy_cpus(STAT_BEFORE, STAT_AFTER, {2}) == pytest.approx(0.3)
    assert busy_cpus(STAT_BEFORE, STAT_BEFORE) is None  # no tick between the readings
    assert busy_cpus(STAT_BEFORE, STAT_AFTER, {7}) is None  # none of the process's CPUs listed


def test_cpus_busy_elsewhere_are_not_counted(tmp_path):
    none = tmp_path / "none"

    def budget(busy, affinity=2, **kwargs):
        return budget_of(environ={}, affinity=affinity, cgroup_root=none, others_busy=lambda: busy, **kwargs)

    assert (budget(0.0).threads, budget(0.0).limited_by) == (2, "affinity")
    assert budget(0.25).threads == 2  # background noise keeps its threads
    assert (budget(0.5).threads, budget(0.5).limited_by) == (1, "busy elsewhere")
    assert budget(1.0).threads == budget(2.0).threads == budget(5.0).threads == 1
    assert budget(None).threads == 2  # no reading: the CPUs as counted
    assert budget(2.9, affinity=8).threads == 5
    assert budget(2.9, affinity=8, concurrent=2).threads == 2

    def never():
        raise AssertionError("sampled with a single CPU to share")

    assert budget_of(environ={}, affinity=1, cgroup_root=none, others_busy=never).threads == 1
    assert budget_of(environ={THREADS_ENV: "2"}, affinity=4, cgroup_root=none, others_busy=never).threads == 2


def test_apply_sets_torch_simpleitk_blas_and_the_environment(monkeypatch):
    import numpy  # noqa: F401  (its OpenBLAS is loaded: threadpoolctl reaches it)
    import SimpleITK as sitk
    import threadpoolctl
    import torch

    for name in THREAD_ENV_VARS:
        monkeypatch.setenv(name, "7")  # restored (or removed) after the test
    before = torch.get_num_threads()
    sitk_before = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(3)
    try:
        with threadpoolctl.threadpool_limits(limits=None):  # restores the BLAS pools on exit
            apply_thread_budget(1)
            assert torch.get_num_threads() == 1
            assert sitk.ProcessObject.GetGlobalDefaultNumberOfThreads() == 1
            assert sitk.N4BiasFieldCorrectionImageFilter().GetNumberOfThreads() == 1  # a new filter's
            blas = [pool for pool in threadpoolctl.threadpool_info() if pool["user_api"] == "blas"]
            assert blas and all(pool["num_threads"] == 1 for pool in blas)
        assert all(os.environ[name] == "1" for name in THREAD_ENV_VARS)
        assert ITK_THREADS_ENV in THREAD_ENV_VARS
    finally:
        torch.set_num_threads(before)
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(sitk_before)
    with pytest.raises(ValueError):
        apply_thread_budget(0)
