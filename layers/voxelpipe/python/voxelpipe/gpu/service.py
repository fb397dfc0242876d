"""A GPU worker built from its environment (the Batch job's, or the local cloud's)."""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping

from voxelpipe.adapters.gpu_queue import GpuQueue
from voxelpipe.adapters.storage import Storage
from voxelpipe.adapters.task_tokens import TaskTokens
from voxelpipe.gpu.runners import catalogue_runner, routing_runner
from voxelpipe.gpu.worker import Runner, Worker
from voxelpipe.wiring import EnvVar, GpuSettings


def default_runner(storage: Storage) -> Runner:
    return routing_runner(catalogue_runner(storage), models=None)


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
