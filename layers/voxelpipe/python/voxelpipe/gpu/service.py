"""A GPU worker built from its environment (the Batch job's, or the local cloud's)."""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping, Sequence

from voxelpipe.adapters.gpu_queue import GpuQueue
from voxelpipe.adapters.storage import Storage
from voxelpipe.adapters.task_tokens import TaskTokens
from voxelpipe.gpu.runners import catalogue_runner, routing_runner
from voxelpipe.gpu.worker import OnResult, Outcome, Runner, Worker
from voxelpipe.inference.models import ModelCache
from voxelpipe.inference.tasks import run_model_tasks
from voxelpipe.messages import AnalysisTask
from voxelpipe.wiring import EnvVar, GpuSettings


def default_runner(storage: Storage) -> Runner:
    """Catalogue analyses through run_analysis; `model:NAME` through run_model_tasks, with one
    ModelCache for the worker's life, so that each model is loaded once."""
    cache = ModelCache()

    def models(tasks: Sequence[AnalysisTask], on_result: OnResult) -> Sequence[Outcome]:
        return run_model_tasks(tasks, storage, cache, on_result=on_result)

    return routing_runner(catalogue_runner(storage), models=models)


def worker_from_environment(
    env: Mapping[str, str] | None = None,
    *,
    runner: Runner | None = None,
    settings: GpuSettings | None = None,
    name: str | None = None,
) -> Worker:
    env = os.environ if env is None else env
    storage = Storage(env[EnvVar.BUCKET])
    return Worker(
        queue=GpuQueue(env[EnvVar.GPU_QUEUE_URL]),
        tokens=TaskTokens(),
        runner=runner if runner is not None else default_runner(storage),
        settings=settings if settings is not None else GpuSettings.from_env(env),
        name=name or f"gpu-worker@{socket.gethostname()}",
    )
