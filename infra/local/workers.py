"""GPU workers in the local cloud: threads polling the local GPU queue, started by a stand-in scaler.

In AWS a scheduled Lambda submits Batch jobs (infra/gpu.py); moto runs no Batch, so here a thread
ticks in its place, applies the same policy (`voxelpipe.gpu.scaling.jobs_to_submit`) to the moto
queue's real depth and starts worker threads, each one the same `Worker` a Batch job runs, with
the environment of the synthesized job definition, under its job role's policies (infra/local/iam.py).
Torch runs on CUDA when present, else the CPU.
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

from infra.local.deploy import GPU_WORKER, Deployment
from infra.local.iam import LocalIam
from voxelpipe.adapters.gpu_queue import GpuQueue
from voxelpipe.adapters.storage import Storage
from voxelpipe.adapters.study_table import DynamoStudyStore
from voxelpipe.adapters.task_tokens import TaskTokens
from voxelpipe.function_specs import SCALER
from voxelpipe.gpu.scaling import scale
from voxelpipe.gpu.worker import Runner, Worker, WorkerSummary
from voxelpipe.gpu_settings import GpuSettings
from voxelpipe.ports import StudyStore
from voxelpipe.wiring import EnvVar

log = logging.getLogger("voxelpipe.local")

# The stand-in scaler looks at the queue this often (EventBridge: every minute).
SCALER_TICK_S = 0.2
# A local worker long-polls at most this long, so that stopping the local cloud is quick.
LOCAL_POLL_WAIT_S = 1

# Builds the runner of each new worker (tests inject faults through it): storage -> runner.
RunnerFactory = Callable[[StudyStore, Storage], Runner]


def default_runner(store: StudyStore, storage: Storage) -> Runner:
    """The deployed workers' runner, imported when the first worker starts: it brings in torch
    (~2-3 s), which a local cloud whose studies never reach the GPU queue doesn't need."""
    from voxelpipe.gpu.service import default_runner as deployed_runner

    return deployed_runner(store, storage)


@dataclass(frozen=True)
class WorkerRecord:
    name: str
    thread: threading.Thread
    worker: Worker

    @property
    def summary(self) -> WorkerSummary:
        return self.worker.summary


class LocalGpuWorkers:
    """The stand-in scaler and its worker threads; started with the local cloud, stopped before moto."""

    def __init__(
        self,
        worker_env: Mapping[str, str],
        scaler_env: Mapping[str, str],
        statements: Sequence[Mapping[str, Any]],
    ) -> None:
        self.env = dict(worker_env)
        self.statements = statements  # the job role's policies, which each worker thread acts under
        deployed = GpuSettings.from_env(self.env)
        self.settings = replace(
            deployed,
            poll_wait_s=min(deployed.poll_wait_s, LOCAL_POLL_WAIT_S),
            max_workers=GpuSettings.from_env(scaler_env).max_workers,
        )
        self.queue = GpuQueue(self.env[EnvVar.GPU_QUEUE_URL])
        self.storage = Storage(self.env[EnvVar.BUCKET])
        self.workers: list[WorkerRecord] = []
        self._runner_factory: RunnerFactory = default_runner
        self._names = itertools.count(1)
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._scaler: threading.Thread | None = None
        self.peak_workers = 0  # the most worker threads alive at once

    @classmethod
    def from_deployment(cls, deployment: Deployment) -> LocalGpuWorkers:
        env = deployment.function_env
        return cls(env[GPU_WORKER], env[SCALER.name], deployment.statements_of(GPU_WORKER))

    # -- the stand-in scaler -------------------------------------------------------------------
    def start(self) -> None:
        self._scaler = threading.Thread(target=self._scale_loop, name="local-gpu-scaler", daemon=True)
        self._scaler.start()

    def _scale_loop(self) -> None:
        while not self._stopping.wait(SCALER_TICK_S):
            try:
                self.scale_once()
            except Exception:  # the scaler Lambda fails a tick the same way: the next one retries
                log.exception("local GPU scaler tick failed")

    def scale_once(self) -> int:
        """One tick of the scaler (the Lambda's own `scale`): start the workers the queue's depth
        calls for; how many started."""
        with self._lock:
            decision = scale(
                self.queue,
                self,
                micro_batch_size=self.settings.micro_batch_size,
                max_workers=self.settings.max_workers,
            )
            self.peak_workers = max(self.peak_workers, decision.active_jobs + len(decision.submitted))
        return len(decision.submitted)

    # -- scaling.WorkerJobs, called by scale_once under the lock --------------------------------
    def active(self) -> int:
        return sum(1 for record in self.workers if record.thread.is_alive())

    def submit(self, count: int) -> list[str]:
        return [self._start_worker() for _ in range(count)]

    def _start_worker(self) -> str:
        name = f"local-gpu-worker-{next(self._names)}"
        worker = Worker(
            queue=self.queue,
            tokens=TaskTokens(),
            runner=self._runner_factory(DynamoStudyStore(), self.storage),
            settings=self.settings,
            name=name,
        )
        thread = threading.Thread(target=self._run_worker, args=(worker,), name=name, daemon=True)
        self.workers.append(WorkerRecord(name, thread, worker))
        thread.start()
        log.info("started %s", name)
        return name

    def _run_worker(self, worker: Worker) -> None:
        try:
            with LocalIam.acting_as(GPU_WORKER, self.statements):
                worker.run()
        except BaseException as crash:  # the thread ends as a Batch job's process would: unanswered
            log.warning("%s died: %r", worker.name, crash)

    def stop(self, timeout_s: float = 30) -> None:
        """Stop the scaler, then every worker (as SIGTERM does a Batch job), and wait for them."""
        self._stopping.set()
        if self._scaler is not None:
            self._scaler.join(timeout_s)
        with self._lock:
            records = list(self.workers)
        for record in records:
            record.worker.stop()
        for record in records:
            record.thread.join(timeout_s)

    # -- fault injection -----------------------------------------------------------------------
    @contextmanager
    def runner(self, factory: RunnerFactory) -> Iterator[None]:
        """Workers started meanwhile run `factory(storage)` instead of the default runner (tests)."""
        previous = self._runner_factory
        self._runner_factory = factory
        try:
            yield
        finally:
            self._runner_factory = previous
