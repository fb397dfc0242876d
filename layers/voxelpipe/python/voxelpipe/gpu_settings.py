"""The GPU half's settings (docs/gpu.md): one source for the state machine, the queue, the workers,
the scaler and the local cloud; and the errors workers answer with."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from voxelpipe.wiring import EnvVar


class GpuWorkerError(StrEnum):
    """Errors a GPU worker answers with (SendTaskFailure); the state machine retries the first two."""

    TRANSIENT = "GpuWorker.Transient"  # may pass on another try: out of GPU memory, throttled, S3 hiccup
    WORKER_LOST = "GpuWorker.WorkerLost"  # the worker stopped (scale-in, spot) with the task unfinished
    ANALYSIS_FAILED = "GpuWorker.AnalysisFailed"  # the analysis raised: retrying the same input won't help
    BAD_MESSAGE = "GpuWorker.BadMessage"  # the message isn't an AnalysisTask


# What a GPU task retries (with the configured attempts); anything else fails the study.
GPU_RETRIED_ERRORS = (
    "States.HeartbeatTimeout",
    "States.Timeout",
    GpuWorkerError.TRANSIENT.value,
    GpuWorkerError.WORKER_LOST.value,
)
GPU_QUEUE_MAX_RECEIVE_COUNT = 5

# CDK context keys (`cdk deploy -c KEY=VALUE`, or cdk.json) that override the GPU settings.
GPU_CONTEXT_PREFIX = "voxelpipe:gpu:"


@dataclass(frozen=True)
class GpuSettings:
    """The GPU half's settings: one source for the state machine, the queue, the workers, the scaler
    and the local cloud. Each field is overridable by the CDK context key `voxelpipe:gpu:<field>`."""

    heartbeat_s: int = 120  # a task without a heartbeat for this long times out (and retries)
    task_timeout_s: int = 3600  # the longest one GPU task may take
    retry_attempts: int = 2  # retries of a GPU task after its first try (Step Functions MaxAttempts)
    retry_interval_s: int = 5
    micro_batch_size: int = 8  # tasks one worker takes and runs together
    idle_exit_s: int = 300  # a worker with nothing to do for this long exits (scale to zero)
    max_workers: int = 4  # Batch jobs the scaler keeps at most
    poll_wait_s: int = 20  # SQS long-poll wait (at most 20)
    # A worker takes no new work after this long and exits (the scaler starts a fresh one if work
    # remains), so that the Batch job timeout only ever ends a hung worker.
    worker_lifetime_s: int = 6 * 3600
    instance_types: tuple[str, ...] = ("g5", "g6")  # Batch compute environment instance families/types
    # Catalogue analyses this deployment runs on the GPU workers (e.g. "tissue-seg").
    gpu_analyses: tuple[str, ...] = ()

    @property
    def visibility_timeout_s(self) -> int:
        """The GPU queue's visibility timeout: a crashed worker's message stays hidden until its token
        has timed out, so the state machine's retry (a new message, a new token) recovers the task and
        the stale message, when it reappears, is dropped by the worker's token check."""
        return 2 * self.heartbeat_s

    @property
    def job_timeout_s(self) -> int:
        """Batch's limit on a worker job: its lifetime, then the longest task it may have started."""
        return self.worker_lifetime_s + self.task_timeout_s + 600

    @property
    def heartbeat_interval_s(self) -> float:
        """How often a worker heartbeats each in-flight task: several times per heartbeat timeout."""
        return self.heartbeat_s / 4

    @classmethod
    def context_keys(cls) -> dict[str, str]:
        """Context key -> field name."""
        return {f"{GPU_CONTEXT_PREFIX}{name}": name for name in cls.__dataclass_fields__}

    @classmethod
    def from_context(cls, lookup: Callable[[str], object]) -> GpuSettings:
        """Settings with the values `lookup` (a construct's `node.try_get_context`) finds, else defaults."""
        values: dict[str, object] = {}
        for key, name in cls.context_keys().items():
            value = lookup(key)
            if value is None:
                continue
            if name in ("instance_types", "gpu_analyses"):
                items = value.split(",") if isinstance(value, str) else list(value)  # type: ignore[call-overload]
                values[name] = tuple(str(item).strip() for item in items if str(item).strip())
            else:
                values[name] = int(str(value))
        settings = cls(**values)  # type: ignore[arg-type]
        settings.validate()
        return settings

    def validate(self) -> None:
        if not 0 <= self.poll_wait_s <= 20:
            raise ValueError("poll_wait_s must be 0-20 (SQS's limit)")
        if self.heartbeat_s < 1 or self.task_timeout_s <= self.heartbeat_s:
            raise ValueError("heartbeat_s must be >= 1 and below task_timeout_s")
        if self.micro_batch_size < 1 or self.max_workers < 0 or self.retry_attempts < 0:
            raise ValueError("micro_batch_size >= 1, max_workers >= 0 and retry_attempts >= 0")

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> GpuSettings:
        """The settings a worker or the scaler was deployed with (its environment); the rest default."""
        values: dict[str, Any] = {
            name: int(env[var]) for var, name in _GPU_ENV_FIELDS.items() if env.get(var)
        }
        values["gpu_analyses"] = tuple(
            name.strip() for name in env.get(EnvVar.GPU_ANALYSES, "").split(",") if name.strip()
        )
        settings = cls(**values)
        settings.validate()
        return settings

    def _env(self, variables: tuple[EnvVar, ...]) -> dict[EnvVar, str]:
        return {var: str(getattr(self, _GPU_ENV_FIELDS[var])) for var in variables}

    def worker_env(self) -> dict[EnvVar, str]:
        """The worker's environment (its job definition's) for these settings."""
        return self._env(
            (
                EnvVar.GPU_HEARTBEAT_S,
                EnvVar.GPU_MICRO_BATCH_SIZE,
                EnvVar.GPU_IDLE_EXIT_S,
                EnvVar.GPU_POLL_WAIT_S,
                EnvVar.GPU_WORKER_LIFETIME_S,
            )
        )

    def routing_env(self) -> dict[EnvVar, str]:
        """What dispatch (which routes) and the API (which lists runtimes) are told."""
        return {EnvVar.GPU_ANALYSES: ",".join(self.gpu_analyses)}

    def scaler_env(self) -> dict[EnvVar, str]:
        return self._env((EnvVar.GPU_MICRO_BATCH_SIZE, EnvVar.GPU_MAX_WORKERS))


# The integer settings the GPU half's functions are told through their environment: variable -> field.
_GPU_ENV_FIELDS: dict[EnvVar, str] = {
    EnvVar.GPU_HEARTBEAT_S: "heartbeat_s",
    EnvVar.GPU_MICRO_BATCH_SIZE: "micro_batch_size",
    EnvVar.GPU_IDLE_EXIT_S: "idle_exit_s",
    EnvVar.GPU_POLL_WAIT_S: "poll_wait_s",
    EnvVar.GPU_MAX_WORKERS: "max_workers",
    EnvVar.GPU_WORKER_LIFETIME_S: "worker_lifetime_s",
}
