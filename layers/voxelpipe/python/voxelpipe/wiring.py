"""The one description of voxelpipe's cloud: names, environment variables and wiring.

The CDK stack builds its resources from these specs, the handlers read the environment
variables named here, and the local cloud deploys the template that CDK synthesizes from them.
Nothing about resource names or wiring is written anywhere else.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


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
    EnvVar.MODELS_TABLE: Resource.MODELS_TABLE,
}

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
    env=(*_STATUS_TABLES, EnvVar.STATE_MACHINE_ARN, EnvVar.MODELS_TABLE),
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
)


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
