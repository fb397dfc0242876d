"""The one description of voxelpipe's cloud: names, environment variables and wiring.

The CDK stack builds its resources from these specs, the handlers read the environment
variables named here, and the local cloud deploys the template that CDK synthesizes from them.
Nothing about resource names or wiring is written anywhere else.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class EnvVar(StrEnum):
    """Environment variables the functions read; CDK sets them, the local cloud resolves them."""

    BUCKET = "VOXELPIPE_BUCKET"
    STUDIES_TABLE = "VOXELPIPE_STUDIES_TABLE"
    TASKS_TABLE = "VOXELPIPE_TASKS_TABLE"
    AUDIT_TABLE = "VOXELPIPE_AUDIT_TABLE"
    OBJECTS_TABLE = "VOXELPIPE_OBJECTS_TABLE"
    IDEMPOTENCY_TABLE = "VOXELPIPE_IDEMPOTENCY_TABLE"
    HIGH_PRIORITY_QUEUE_URL = "VOXELPIPE_HIGH_PRIORITY_QUEUE_URL"
    NORMAL_PRIORITY_QUEUE_URL = "VOXELPIPE_NORMAL_PRIORITY_QUEUE_URL"
    STATE_MACHINE_ARN = "VOXELPIPE_STATE_MACHINE_ARN"
    MAX_UPLOAD_BYTES = "VOXELPIPE_MAX_UPLOAD_BYTES"
    DICOM_ORIGINALS = "VOXELPIPE_DICOM_ORIGINALS"  # "delete" or "retain" (7 days under work/)
    AUTH_MODE = "VOXELPIPE_AUTH_MODE"  # "cognito" behind API Gateway; "dev" for local signed tokens
    EVENT_BUS_NAME = "VOXELPIPE_EVENT_BUS_NAME"  # every status change is put on this bus
    WEBHOOK_SECRET_ARN = "VOXELPIPE_WEBHOOK_SECRET_ARN"  # the key webhook signing keys derive from
    WEBHOOK_QUEUE_URL = "VOXELPIPE_WEBHOOK_QUEUE_URL"  # the webhook function backs its retries off here
    PRICES = "VOXELPIPE_PRICES"  # JSON overriding fields of voxelpipe.cost.PriceTable (optional)
    # The GPU half (docs/gpu.md): the queue the state machine sends task tokens to, the Batch job
    # queue and definition the scaler submits workers to, and the workers' settings.
    GPU_QUEUE_URL = "VOXELPIPE_GPU_QUEUE_URL"
    GPU_JOB_QUEUE = "VOXELPIPE_GPU_JOB_QUEUE"
    GPU_JOB_DEFINITION = "VOXELPIPE_GPU_JOB_DEFINITION"
    GPU_HEARTBEAT_S = "VOXELPIPE_GPU_HEARTBEAT_S"
    GPU_MICRO_BATCH_SIZE = "VOXELPIPE_GPU_MICRO_BATCH_SIZE"
    GPU_IDLE_EXIT_S = "VOXELPIPE_GPU_IDLE_EXIT_S"
    GPU_POLL_WAIT_S = "VOXELPIPE_GPU_POLL_WAIT_S"
    GPU_MAX_WORKERS = "VOXELPIPE_GPU_MAX_WORKERS"
    GPU_WORKER_LIFETIME_S = "VOXELPIPE_GPU_WORKER_LIFETIME_S"
    # Catalogue analyses this deployment runs on the GPU workers instead of Lambda (comma-separated).
    GPU_ANALYSES = "VOXELPIPE_GPU_ANALYSES"
    MODELS_TABLE = "VOXELPIPE_MODELS_TABLE"  # the model registry (bring-your-own models)


class Runtime(StrEnum):
    """Where an analysis runs; the state machine's Choice routes on it."""

    LAMBDA = "lambda"
    GPU = "gpu"


class DicomOriginals(StrEnum):
    """What becomes of uploaded DICOM objects once converted and de-identified."""

    DELETE = "delete"
    RETAIN = "retain"  # moved under work/{study_id}/, which expires


class Prefix(StrEnum):
    """Key prefixes of the ingest bucket."""

    UPLOADS = "uploads/"  # uploads/{tenant}/{study_id}/{file}: what clients write
    QUARANTINE = "quarantine/"  # rejected uploads, kept briefly for the uploader to inspect
    DERIVED = "derived/"  # derived/{study_id}/...: user-facing artifacts and results.json
    WORK = "work/"  # work/{study_id}/{attempt}/...: intermediates between steps, short-lived
    MODELS = "models/"  # models/{name}/{version}/model.{pt|onnx} and model.json: registered models


class Resource(StrEnum):
    """Construct ids of the stack's resources; the template's logical ids start with these."""

    BUCKET = "IngestBucket"
    STUDIES_TABLE = "StudiesTable"
    TASKS_TABLE = "TasksTable"
    AUDIT_TABLE = "AuditTable"
    OBJECTS_TABLE = "ObjectsTable"
    IDEMPOTENCY_TABLE = "IdempotencyTable"
    HIGH_PRIORITY_QUEUE = "HighPriorityQueue"
    NORMAL_PRIORITY_QUEUE = "NormalPriorityQueue"
    STATE_MACHINE = "StudyStateMachine"
    EVENT_BUS = "StudyEventBus"
    WEBHOOK_QUEUE = "WebhookQueue"
    WEBHOOK_SECRET = "WebhookSigningSecret"
    GPU_QUEUE = "GpuQueue"
    GPU_JOB_QUEUE = "GpuJobQueue"
    GPU_JOB_DEFINITION = "GpuJobDefinition"
    MODELS_TABLE = "ModelsTable"


# The resource each environment variable points at, and whether it is the resource's name/URL
# (CloudFormation `Ref`) or its ARN.
ENV_RESOURCES: dict[EnvVar, Resource] = {
    EnvVar.BUCKET: Resource.BUCKET,
    EnvVar.STUDIES_TABLE: Resource.STUDIES_TABLE,
    EnvVar.TASKS_TABLE: Resource.TASKS_TABLE,
    EnvVar.AUDIT_TABLE: Resource.AUDIT_TABLE,
    EnvVar.OBJECTS_TABLE: Resource.OBJECTS_TABLE,
    EnvVar.IDEMPOTENCY_TABLE: Resource.IDEMPOTENCY_TABLE,
    EnvVar.HIGH_PRIORITY_QUEUE_URL: Resource.HIGH_PRIORITY_QUEUE,
    EnvVar.NORMAL_PRIORITY_QUEUE_URL: Resource.NORMAL_PRIORITY_QUEUE,
    EnvVar.STATE_MACHINE_ARN: Resource.STATE_MACHINE,
    EnvVar.EVENT_BUS_NAME: Resource.EVENT_BUS,
    EnvVar.WEBHOOK_SECRET_ARN: Resource.WEBHOOK_SECRET,
    EnvVar.WEBHOOK_QUEUE_URL: Resource.WEBHOOK_QUEUE,
    EnvVar.GPU_QUEUE_URL: Resource.GPU_QUEUE,
    EnvVar.GPU_JOB_QUEUE: Resource.GPU_JOB_QUEUE,
    EnvVar.GPU_JOB_DEFINITION: Resource.GPU_JOB_DEFINITION,
    EnvVar.MODELS_TABLE: Resource.MODELS_TABLE,
}
# Resources of the GPU half: infra/gpu.py wires them (env and grants) itself.
GPU_RESOURCES = frozenset({Resource.GPU_QUEUE, Resource.GPU_JOB_QUEUE, Resource.GPU_JOB_DEFINITION})

# Default upload limit; deployments override it through the environment.
DEFAULT_MAX_UPLOAD_BYTES = 2 * 1024**3

FUNCTION_TAG = "voxelpipe:function"  # tag on every Lambda naming its FunctionSpec


@dataclass(frozen=True)
class FunctionSpec:
    """One Lambda function: its code folder, handler, size and the resources it uses."""

    name: str
    description: str
    memory_mb: int
    timeout_s: int
    env: tuple[EnvVar, ...]
    handler: str = "handler.lambda_handler"
    settings: dict[EnvVar, str] = field(default_factory=dict)
    # A container image built from functions/{name}/Dockerfile, for code too heavy for layers.
    image: bool = False

    @property
    def code_dir(self) -> str:
        return f"functions/{self.name}"

    @property
    def construct_id(self) -> str:
        return "".join(part.capitalize() for part in self.name.split("_")) + "Function"


# The status tables, and the bus that tracking.transition puts every status change on.
_STATUS_TABLES = (
    EnvVar.STUDIES_TABLE,
    EnvVar.TASKS_TABLE,
    EnvVar.AUDIT_TABLE,
    EnvVar.OBJECTS_TABLE,
    EnvVar.EVENT_BUS_NAME,
)

INGEST = FunctionSpec(
    name="ingest",
    description="Validates each upload from its header, then its data; rejects or queues the study",
    memory_mb=3008,
    timeout_s=300,
    env=(
        EnvVar.BUCKET,
        *_STATUS_TABLES,
        EnvVar.IDEMPOTENCY_TABLE,
        EnvVar.HIGH_PRIORITY_QUEUE_URL,
        EnvVar.NORMAL_PRIORITY_QUEUE_URL,
        EnvVar.MAX_UPLOAD_BYTES,
        EnvVar.MODELS_TABLE,
    ),
    settings={EnvVar.MAX_UPLOAD_BYTES: str(DEFAULT_MAX_UPLOAD_BYTES)},
)
DISPATCH = FunctionSpec(
    name="dispatch",
    description="Starts one state machine execution per study attempt from the work queues",
    memory_mb=256,
    timeout_s=30,
    env=(*_STATUS_TABLES, EnvVar.STATE_MACHINE_ARN, EnvVar.MODELS_TABLE, EnvVar.GPU_ANALYSES),
)
PREPARE = FunctionSpec(
    name="prepare",
    description="Decodes the upload once into a canonical RAS volume for the analyses",
    memory_mb=4096,
    timeout_s=600,
    env=(EnvVar.BUCKET, *_STATUS_TABLES, EnvVar.DICOM_ORIGINALS),
    settings={EnvVar.DICOM_ORIGINALS: DicomOriginals.DELETE.value},
)
RUN_ANALYSIS = FunctionSpec(
    name="run_analysis",
    description="Runs one Lambda-runtime analysis of the catalogue on the prepared volume",
    memory_mb=10240,
    timeout_s=900,
    env=(EnvVar.BUCKET, *_STATUS_TABLES),
    image=True,  # torch
)
FINALIZE = FunctionSpec(
    name="finalize",
    description="Writes results.json with provenance and marks the study COMPLETED",
    memory_mb=512,
    timeout_s=60,
    env=(EnvVar.BUCKET, *_STATUS_TABLES),
)
MARK_FAILED = FunctionSpec(
    name="mark_failed",
    description="Marks the study FAILED with the error that stopped its execution",
    memory_mb=256,
    timeout_s=30,
    env=_STATUS_TABLES,
)

API = FunctionSpec(
    name="api",
    description="The query API: FastAPI behind API Gateway (Mangum)",
    memory_mb=1024,
    timeout_s=29,  # API Gateway's integration timeout
    env=(
        EnvVar.BUCKET,
        *_STATUS_TABLES,
        EnvVar.HIGH_PRIORITY_QUEUE_URL,
        EnvVar.NORMAL_PRIORITY_QUEUE_URL,
        EnvVar.STATE_MACHINE_ARN,
        EnvVar.MAX_UPLOAD_BYTES,
        EnvVar.AUTH_MODE,
        EnvVar.WEBHOOK_SECRET_ARN,  # to hand each webhook study its signing key
        EnvVar.MODELS_TABLE,
        EnvVar.GPU_ANALYSES,  # GET /analyses shows the runtime each analysis is deployed with
    ),
    settings={EnvVar.MAX_UPLOAD_BYTES: str(DEFAULT_MAX_UPLOAD_BYTES), EnvVar.AUTH_MODE: "cognito"},
)

REAPER = FunctionSpec(
    name="reaper",
    description="Every few minutes: fails or re-drives studies stuck past their step's deadline",
    memory_mb=512,
    timeout_s=120,
    env=(
        *_STATUS_TABLES,
        EnvVar.HIGH_PRIORITY_QUEUE_URL,
        EnvVar.NORMAL_PRIORITY_QUEUE_URL,
        EnvVar.STATE_MACHINE_ARN,
    ),
)
WEBHOOK = FunctionSpec(
    name="webhook",
    description="POSTs each status change, signed, to the study's webhook URL (SQS batches, retried)",
    memory_mb=256,
    timeout_s=30,
    env=(EnvVar.STUDIES_TABLE, EnvVar.WEBHOOK_SECRET_ARN, EnvVar.WEBHOOK_QUEUE_URL),
)
SCALER = FunctionSpec(
    name="scaler",
    description="Every minute: submits GPU worker jobs to follow the GPU queue's depth",
    memory_mb=256,
    timeout_s=30,
    env=(
        EnvVar.GPU_QUEUE_URL,
        EnvVar.GPU_JOB_QUEUE,
        EnvVar.GPU_JOB_DEFINITION,
        EnvVar.GPU_MAX_WORKERS,
        EnvVar.GPU_MICRO_BATCH_SIZE,
    ),
)

# What the GPU worker (a Batch job, not a Lambda) is told of; its job role may use exactly these.
GPU_WORKER_ENV: tuple[EnvVar, ...] = (
    EnvVar.BUCKET,
    *_STATUS_TABLES,
    EnvVar.MODELS_TABLE,
    EnvVar.GPU_QUEUE_URL,
)

FUNCTIONS: tuple[FunctionSpec, ...] = (
    INGEST,
    DISPATCH,
    PREPARE,
    RUN_ANALYSIS,
    FINALIZE,
    MARK_FAILED,
    API,
    REAPER,
    WEBHOOK,
    SCALER,
)


# Task rows name steps, not functions: the function that runs each pipeline step. An analysis's
# step is `analysis:{name}`, run by RunAnalysis on Lambda (or by a GPU worker).
STEP_FUNCTIONS: dict[str, FunctionSpec] = {"validate": INGEST, "prepare": PREPARE, "finalize": FINALIZE}
ANALYSIS_STEP_PREFIX = "analysis:"


def analysis_step(analysis: str) -> str:
    return ANALYSIS_STEP_PREFIX + analysis


def analysis_of_step(step: str) -> str | None:
    """The analysis an `analysis:{name}` step runs; None for any other step."""
    return step.removeprefix(ANALYSIS_STEP_PREFIX) if step.startswith(ANALYSIS_STEP_PREFIX) else None


def function_spec(name: str) -> FunctionSpec:
    """The spec of the function called `name` (its folder under functions/)."""
    for spec in FUNCTIONS:
        if spec.name == name:
            return spec
    raise KeyError(f"no function {name!r}; known: {', '.join(spec.name for spec in FUNCTIONS)}")


# SQS settings (DESIGN: visibility >= 6x the consumer's timeout, >= 5 receives before the DLQ).
QUEUE_VISIBILITY_TIMEOUT_S = 6 * DISPATCH.timeout_s
QUEUE_MAX_RECEIVE_COUNT = 5
DISPATCH_BATCH_SIZE = 10

# Step Functions: errors a Lambda task retries (everything else goes to MarkFailed).
TRANSIENT_LAMBDA_ERRORS = (
    "Lambda.ServiceException",
    "Lambda.AWSLambdaException",
    "Lambda.SdkClientException",
    "Lambda.ClientExecutionTimeoutException",
)
# How many analyses of one study run at once.
ANALYSIS_CONCURRENCY = 4


# How often the reaper runs, and how many studies of each status it looks at per run.
REAPER_INTERVAL_MIN = 5
REAPER_BATCH = 50
# The webhook queue: >= 5 receives before its DLQ, visibility >= 6x the webhook function's timeout.
WEBHOOK_MAX_RECEIVE_COUNT = 8
WEBHOOK_VISIBILITY_TIMEOUT_S = 6 * WEBHOOK.timeout_s
WEBHOOK_BATCH_SIZE = 10
# EventBridge: what every status-change event carries as source and detail-type.
EVENT_SOURCE = "voxelpipe"
STATUS_CHANGED = "Study Status Changed"


def execution_name(study_id: str, attempt: int) -> str:
    """The state machine execution of a study attempt: a duplicate start is a no-op."""
    return f"{study_id}-{attempt}"


# -- The GPU half (docs/gpu.md) -------------------------------------------------------------------


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
