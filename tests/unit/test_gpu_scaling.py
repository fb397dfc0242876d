"""The scaling policy: workers follow the GPU queue's depth, up to the maximum, none for an empty queue."""

from __future__ import annotations

import pytest

from voxelpipe.adapters.queues import QueueDepth
from voxelpipe.gpu.scaling import jobs_to_submit, scale, workers_wanted


@pytest.mark.parametrize(
    ("visible", "in_flight", "wanted"),
    [(0, 0, 0), (1, 0, 1), (8, 0, 1), (9, 0, 2), (5, 4, 2), (0, 3, 1), (100, 0, 4)],
)
def test_one_worker_per_micro_batch_up_to_the_maximum(visible, in_flight, wanted):
    assert workers_wanted(QueueDepth(visible, in_flight), micro_batch_size=8, max_workers=4) == wanted


def test_running_jobs_count_against_the_wanted_workers():
    depth = QueueDepth(visible=20, in_flight=0)
    assert jobs_to_submit(depth, active_jobs=0, micro_batch_size=8, max_workers=4) == 3
    assert jobs_to_submit(depth, active_jobs=2, micro_batch_size=8, max_workers=4) == 1
    assert jobs_to_submit(depth, active_jobs=5, micro_batch_size=8, max_workers=4) == 0  # never negative


def test_an_empty_queue_submits_nothing_even_with_no_worker():
    assert jobs_to_submit(QueueDepth(0, 0), active_jobs=0, micro_batch_size=8, max_workers=4) == 0


def test_a_maximum_of_zero_disables_the_gpu_workers():
    assert jobs_to_submit(QueueDepth(50, 0), active_jobs=0, micro_batch_size=8, max_workers=0) == 0


class _Queue:
    def __init__(self, depth: QueueDepth) -> None:
        self._depth = depth

    def depth(self) -> QueueDepth:
        return self._depth


class _Jobs:
    def __init__(self, active: int) -> None:
        self._active = active
        self.listed = 0
        self.submitted: list[str] = []

    def active(self) -> int:
        self.listed += 1
        return self._active

    def submit(self, count: int) -> list[str]:
        ids = [f"job-{len(self.submitted) + i}" for i in range(count)]
        self.submitted.extend(ids)
        return ids


def test_scale_submits_the_missing_workers():
    jobs = _Jobs(active=1)
    decision = scale(_Queue(QueueDepth(17, 2)), jobs, micro_batch_size=8, max_workers=4)
    assert decision.submitted == ["job-0", "job-1"]
    assert decision.as_log() == {"visible": 17, "in_flight": 2, "active_jobs": 1, "submitted": 2}


def test_scale_on_an_empty_queue_does_not_even_list_jobs():
    jobs = _Jobs(active=0)
    decision = scale(_Queue(QueueDepth(0, 0)), jobs, micro_batch_size=8, max_workers=4)
    assert decision.submitted == [] and jobs.listed == 0
