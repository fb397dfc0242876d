"""A GPU worker built from its environment (the Batch job's, or the local cloud's)."""

from __future__ import annotations

import os
import socket
from collections.abc import Sequence

from voxelpipe.adapters.gpu_queue import GpuQueue
from voxelpipe.adapters.storage import Storage
from voxelpipe.adapters.study_table import DynamoStudyStore
from voxelpipe.adapters.task_tokens import TaskTokens
from voxelpipe.gpu.runners import catalogue_runner, routing_runner
from voxelpipe.gpu.worker import OnResult, Outcome, Runner, Worker
from voxelpipe.gpu_settings import GpuSettings
from voxelpipe.inference.models import ModelCache
from voxelpipe.inference.tasks import run_model_tasks
from voxelpipe.messages import AnalysisTask
from voxelpipe.ports import StudyStore
from voxelpipe.thread_budget import apply_thread_budget, thread_budget


def default_runner(store: StudyStore, storage: Storage) -> Runner:
    """Catalogue analyses through run_analysis; `model:NAME` through run_model_tasks, with one
    ModelCache for the worker's life, so that each model is loaded once."""
    cache = ModelCache()

    def models(tasks: Sequence[AnalysisTask], on_result: OnResult) -> Sequence[Outcome]:
        return run_model_tasks(tasks, store, storage, cache, on_result=on_result)

    return routing_runner(catalogue_runner(store, storage), models=models)


def worker_from_environment() -> Worker:
    """The worker a Batch job runs: the bucket, queue and settings its job definition gives it."""
    # Before any model loads: torch's pool for the work that stays on the CPU (pre/post-processing,
    # a model without CUDA) fits the job's CPUs; micro-batches run one at a time.
    apply_thread_budget(thread_budget().threads)
    return Worker(
        queue=GpuQueue.from_environment(),
        tokens=TaskTokens(),
        runner=default_runner(DynamoStudyStore(), Storage.from_environment()),
        settings=GpuSettings.from_env(os.environ),
        name=f"gpu-worker@{socket.gethostname()}",
    )
