"""Every Lambda function: its code folder, size, timeout and the resources it is told of.

The stack builds one function per spec (and its role from `infra/access.py`); the local cloud
finds each handler by its spec; task rows name the step each function runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from voxelpipe.wiring import DEFAULT_BATCH_MAX_IN_FLIGHT, DEFAULT_MAX_UPLOAD_BYTES, DicomOriginals, EnvVar


class DependencyGroup(StrEnum):
    """A Lambda layer of third-party packages (`make layers` builds one per group): a zip function
    gets only the groups it imports, so the light ones load and ship no numpy."""

    CORE = "core"  # every zip function: Powertools, boto3, PynamoDB
    WEB = "web"  # the API
    IMAGING = "imaging"  # reading NIfTI and DICOM
    # RS256 for PyJWT: only the live authorizer checks Cognito's signatures itself (API Gateway does
    # it for the REST API), and the API function has no room for it under Lambda's 250 MB limit.
    TOKEN_SIGNATURES = "token-signatures"


# Each group's packages: pyproject's `dependencies`, by name (the pins live there), with what they
# need. A package both CORE and another group need ships in CORE only; two other groups may share
# none (infra/layers.py refuses that split).
DEPENDENCY_GROUPS: dict[DependencyGroup, tuple[str, ...]] = {
    DependencyGroup.CORE: ("aws-lambda-powertools", "boto3", "pynamodb"),
    DependencyGroup.WEB: ("fastapi", "mangum", "pyjwt"),
    DependencyGroup.IMAGING: (
        "numpy",
        "nibabel",
        "pydicom",
        "pylibjpeg",
        "pylibjpeg-libjpeg",
        "pylibjpeg-openjpeg",
        "pylibjpeg-rle",
        "pillow",
        "isal",
    ),
    DependencyGroup.TOKEN_SIGNATURES: ("cryptography",),
}
_LIGHT = (DependencyGroup.CORE,)
_IMAGING = (DependencyGroup.CORE, DependencyGroup.IMAGING)


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
    # The dependency layers a zip function gets (an image installs its own); a test imports each
    # handler with only these and fails on any other third-party package.
    dependencies: tuple[DependencyGroup, ...] = _LIGHT

    @property
    def code_dir(self) -> str:
        return f"functions/{self.name}"

    @property
    def construct_id(self) -> str:
        return "".join(part.capitalize() for part in self.name.split("_")) + "Function"


# Every function's Powertools settings (the stack sets them beside each spec's own).
POWERTOOLS_ENV: dict[str, str] = {
    "POWERTOOLS_SERVICE_NAME": "voxelpipe",
    "POWERTOOLS_METRICS_NAMESPACE": "Voxelpipe",
    "POWERTOOLS_LOG_LEVEL": "INFO",
}

# The status tables, and the bus that tracking.transition puts every status change on.
_STATUS_TABLES = (
    EnvVar.STUDIES_TABLE,
    EnvVar.TASKS_TABLE,
    EnvVar.AUDIT_TABLE,
    EnvVar.OBJECTS_TABLE,
    EnvVar.EVENT_BUS_NAME,
)

# The work queues, by priority: whoever queues a study may have to send it to any of them.
_WORK_QUEUES = (
    EnvVar.HIGH_PRIORITY_QUEUE_URL,
    EnvVar.NORMAL_PRIORITY_QUEUE_URL,
    EnvVar.LOW_PRIORITY_QUEUE_URL,
)

# Completing a DICOM exam (ingest, the API, the completion sweep): its pending transfers, and the
# tenant's routing rules.
_EXAM_TABLES = (EnvVar.TRANSFERS_TABLE, EnvVar.RULES_TABLE)

INGEST = FunctionSpec(
    name="ingest",
    description="Validates each upload from its header, then its data; rejects or queues the study",
    memory_mb=3008,
    timeout_s=300,
    env=(
        EnvVar.BUCKET,
        *_STATUS_TABLES,
        EnvVar.IDEMPOTENCY_TABLE,
        *_WORK_QUEUES,
        EnvVar.MAX_UPLOAD_BYTES,
        EnvVar.MODELS_TABLE,
        *_EXAM_TABLES,
    ),
    settings={EnvVar.MAX_UPLOAD_BYTES: str(DEFAULT_MAX_UPLOAD_BYTES)},
    dependencies=_IMAGING,
)
DISPATCH = FunctionSpec(
    name="dispatch",
    description="Starts one state machine execution per study attempt from the work queues",
    memory_mb=256,
    timeout_s=30,
    env=(
        *_STATUS_TABLES,
        EnvVar.STATE_MACHINE_ARN,
        EnvVar.MODELS_TABLE,
        EnvVar.REFERENCES_TABLE,  # fixes the version of the reference data a study names
        EnvVar.GPU_ANALYSES,
    ),
)
PREPARE = FunctionSpec(
    name="prepare",
    description="Decodes the upload once into a canonical RAS volume for the analyses",
    memory_mb=4096,
    timeout_s=600,
    # The identity maps: adds what de-identifying the originals replaced (never reads them).
    env=(
        EnvVar.BUCKET,
        *_STATUS_TABLES,
        EnvVar.DICOM_ORIGINALS,
        EnvVar.IDENTITY_MAP_TABLE,
        # A DICOM study's subject (derived from the Patient ID when none was declared), its date
        # offset, and the subject's record (docs/subjects.md).
        EnvVar.PSEUDONYM_SECRET_ARN,
        EnvVar.SUBJECTS_TABLE,
    ),
    settings={EnvVar.DICOM_ORIGINALS: DicomOriginals.DELETE.value},
    dependencies=_IMAGING,
)
RUN_ANALYSIS = FunctionSpec(
    name="run_analysis",
    description="Runs one Lambda-runtime analysis (catalogue or registered model) on the prepared volume",
    memory_mb=10240,
    timeout_s=900,
    env=(EnvVar.BUCKET, *_STATUS_TABLES),
    image=True,  # torch
    dependencies=(),  # the image installs the package with its dependencies
)
FINALIZE = FunctionSpec(
    name="finalize",
    description="Writes the report (HTML, PDF) and results.json with provenance; marks the study COMPLETED",
    # The report: matplotlib's figures and a headless Chromium printing the PDF (docs/report.md);
    # Chromium wants ~1 GB and a second vCPU shortens it.
    memory_mb=2048,
    timeout_s=180,
    env=(EnvVar.BUCKET, *_STATUS_TABLES, EnvVar.DICOM_SEG_TYPE),
    settings={EnvVar.DICOM_SEG_TYPE: "BINARY"},  # DICOM outputs' SEG type (docs/dicom-outputs.md)
    image=True,  # Chromium (a Debian package), matplotlib and highdicom
    dependencies=(),  # the image installs the package with its dependencies
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
        *_WORK_QUEUES,
        EnvVar.STATE_MACHINE_ARN,
        EnvVar.MAX_UPLOAD_BYTES,
        EnvVar.AUTH_MODE,
        EnvVar.WEBHOOK_SECRET_ARN,  # each webhook study's signing key; the list cursors' key
        EnvVar.MODELS_TABLE,
        EnvVar.REFERENCES_TABLE,  # registers reference data; checks what studies name
        EnvVar.GPU_ANALYSES,  # GET /analyses shows the runtime each analysis is deployed with
        EnvVar.LIVE_URL,  # GET /health tells clients where live progress is
        # Presigned URLs name this endpoint (a private deployment's S3 interface endpoint), if set.
        EnvVar.S3_PUBLIC_ENDPOINT,
        EnvVar.CORS_ALLOWED_ORIGINS,
        *_EXAM_TABLES,  # completes DICOM uploads, takes STOW-RS transfers, keeps the rule sets (/rules)
        # /destinations (their secrets under the prefix), a study's deliveries and their redrive.
        EnvVar.DESTINATIONS_TABLE,
        EnvVar.DELIVERIES_TABLE,
        EnvVar.DELIVERY_QUEUE_URL,
        EnvVar.DESTINATION_SECRET_PREFIX,
        EnvVar.IDENTITY_MAP_TABLE,  # deleting a study deletes its identity map (never reads one)
        # Registered scan dates are shifted, STOW-RS exams' study ids keyed; /subjects (docs/subjects.md).
        EnvVar.PSEUDONYM_SECRET_ARN,
        EnvVar.SUBJECTS_TABLE,
        # Bulk reprocess (POST /reprocess-batches): the batches, and each one's throttle.
        EnvVar.BATCHES_TABLE,
        EnvVar.BATCH_MAX_IN_FLIGHT,
        # Machine clients (docs/security.md): who each client id is; their app clients in the pool.
        EnvVar.MACHINE_CLIENTS_TABLE,
        EnvVar.MACHINE_CLIENT_MAX_DAYS,
        EnvVar.USER_POOL_ID,
        EnvVar.LOGIN_BASE_URL,  # GET /health tells `voxelpipe login` where to sign in
        EnvVar.LOGIN_CLIENT_ID,
        # One access audit row per call on tenant data (appended, never changed), kept as the
        # deployment says (CDK context voxelpipe:audit:retention_days; the stack sets it).
        EnvVar.ACCESS_AUDIT_TABLE,
        EnvVar.AUDIT_RETENTION_DAYS,
        # Per-tenant quotas: counters and overrides, and the defaults (CDK context voxelpipe:quotas).
        EnvVar.QUOTAS_TABLE,
        EnvVar.QUOTA_DEFAULTS,
    ),
    settings={
        EnvVar.MAX_UPLOAD_BYTES: str(DEFAULT_MAX_UPLOAD_BYTES),
        EnvVar.AUTH_MODE: "cognito",
        EnvVar.BATCH_MAX_IN_FLIGHT: str(DEFAULT_BATCH_MAX_IN_FLIGHT),
        EnvVar.S3_PUBLIC_ENDPOINT: "",  # S3's own names; a private deployment sets its endpoint
    },
    # Completing a DICOM upload runs the series checks (imported then, not at a cold start).
    dependencies=(DependencyGroup.CORE, DependencyGroup.WEB, DependencyGroup.IMAGING),
)

# Cohort exports (GET /measures, docs/api.md): the API's app, routed here by API Gateway for that
# path alone, because Parquet needs pyarrow (about 130 MB), which the API function has no room for
# under Lambda's 250 MB. An image, like egress. Its answer is at most Lambda's 6 MB response payload
# (base64 for Parquet): a larger export goes to exports/ and the answer is a 303 to it.
EXPORT_INLINE_MAX_BYTES = 4 * 1024 * 1024
EXPORT = FunctionSpec(
    name="export",
    description="Cohort exports of measures (GET /measures): CSV or Parquet, large ones through S3",
    # One whole vCPU (Lambda's share at 1769 MB): an export is CPU-bound, and must end within 29 s.
    memory_mb=1769,
    timeout_s=29,  # API Gateway's integration timeout
    env=(
        EnvVar.BUCKET,  # exports/: what is too large for a response
        EnvVar.STUDIES_TABLE,  # read only: the tenant-created index, page by page
        EnvVar.AUTH_MODE,
        EnvVar.CORS_ALLOWED_ORIGINS,
        EnvVar.EXPORT_INLINE_MAX_BYTES,
        EnvVar.S3_PUBLIC_ENDPOINT,  # the 303's presigned GET names it (a private deployment's)
        # The same app as the API's: each export writes its access audit row and counts against
        # the tenant's requests per minute (docs/security.md, "Audit", "Quotas").
        EnvVar.ACCESS_AUDIT_TABLE,
        EnvVar.AUDIT_RETENTION_DAYS,
        EnvVar.QUOTAS_TABLE,
        EnvVar.QUOTA_DEFAULTS,
        EnvVar.MACHINE_CLIENTS_TABLE,  # read only: a machine client's export (/machine/measures)
    ),
    settings={
        EnvVar.AUTH_MODE: "cognito",
        EnvVar.EXPORT_INLINE_MAX_BYTES: str(EXPORT_INLINE_MAX_BYTES),
        EnvVar.S3_PUBLIC_ENDPOINT: "",  # S3's own names; a private deployment sets its endpoint
    },
    image=True,  # pyarrow (the export extra)
    dependencies=(),  # the image installs the package with its dependencies
)
# The API paths API Gateway sends to the export function instead of the API function (the local
# `voxelpipe serve` acts as it for these too).
EXPORT_PATHS = ("measures",)

REAPER = FunctionSpec(
    name="reaper",
    description="Every few minutes: fails or re-drives stuck studies; purges deleted ones again",
    memory_mb=512,
    timeout_s=120,
    env=(
        EnvVar.BUCKET,  # deleted studies are purged again
        *_STATUS_TABLES,
        *_WORK_QUEUES,
        EnvVar.STATE_MACHINE_ARN,
        EnvVar.IDENTITY_MAP_TABLE,  # purging a deleted study again deletes its identity map
    ),
)
COMPLETE_TRANSFERS = FunctionSpec(
    name="complete_transfers",
    description="Every minute: routes and queues the network DICOM exams whose transfers are over",
    memory_mb=1024,
    timeout_s=300,
    env=(
        EnvVar.BUCKET,
        *_STATUS_TABLES,
        *_EXAM_TABLES,
        *_WORK_QUEUES,
        EnvVar.MAX_UPLOAD_BYTES,
        EnvVar.MODELS_TABLE,
    ),
    settings={EnvVar.MAX_UPLOAD_BYTES: str(DEFAULT_MAX_UPLOAD_BYTES)},
    dependencies=_IMAGING,  # routing reads the first instance of each series
)
REPROCESS_BATCHES = FunctionSpec(
    name="reprocess_batches",
    description="Every minute: advances bulk reprocess batches (low priority, throttled, with progress)",
    memory_mb=512,
    timeout_s=300,
    # Reprocessing a study: its record, rows and audit; its outputs moved under attempts/; its work
    # item queued (low priority), after reading the high and normal queues' backlog.
    env=(
        EnvVar.BUCKET,
        *_STATUS_TABLES,
        EnvVar.BATCHES_TABLE,
        *_WORK_QUEUES,
        EnvVar.MODELS_TABLE,  # the batch's analyses are checked as registration checks them
        EnvVar.REFERENCES_TABLE,
    ),
)
WEBHOOK = FunctionSpec(
    name="webhook",
    description="POSTs each status change, signed, to the study's webhook URL (SQS batches, retried)",
    memory_mb=256,
    timeout_s=30,
    env=(EnvVar.STUDIES_TABLE, EnvVar.WEBHOOK_SECRET_ARN, EnvVar.WEBHOOK_QUEUE_URL),
)
# The egress boundary (issue 17, docs/deliveries.md): sends completed studies' DICOM outputs to
# their destinations, re-identified (voxelpipe.dicom.reidentify) for an internal one. The only
# function that reads the identity maps.
EGRESS = FunctionSpec(
    name="egress",
    description="Delivers completed studies' DICOM outputs to destinations, re-identified for internal ones",
    memory_mb=1024,
    timeout_s=300,
    env=(
        EnvVar.BUCKET,  # reads derived/: results.json and the DICOM outputs
        EnvVar.STUDIES_TABLE,
        EnvVar.EVENT_BUS_NAME,  # Study Delivered / Delivery Failed
        EnvVar.DESTINATIONS_TABLE,
        EnvVar.DELIVERIES_TABLE,
        EnvVar.DELIVERY_QUEUE_URL,
        EnvVar.IDENTITY_MAP_TABLE,  # re-identifies for internal destinations
    ),
    # pynetdicom (C-STORE) shares pydicom with the imaging layer group: an image
    # (functions/egress/Dockerfile says why).
    image=True,
    dependencies=(),
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

# Live progress over WebSocket (voxelpipe.live, docs/api.md).
LIVE_AUTHORIZER = FunctionSpec(
    name="live_authorizer",
    description="Authorizes a live-progress WebSocket at $connect: a Cognito ID token or a viewer grant",
    memory_mb=256,
    timeout_s=10,
    env=(EnvVar.WEBHOOK_SECRET_ARN, EnvVar.USER_POOL_ID, EnvVar.USER_POOL_CLIENT_ID),
    # PyJWT with RS256 for Cognito's ID tokens; the REST API's claim checks.
    dependencies=(DependencyGroup.CORE, DependencyGroup.WEB, DependencyGroup.TOKEN_SIGNATURES),
)
LIVE = FunctionSpec(
    name="live",
    description="The live-progress WebSocket routes: connect, disconnect, subscribe and unsubscribe",
    memory_mb=256,
    timeout_s=10,
    env=(EnvVar.CONNECTIONS_TABLE, EnvVar.STUDIES_TABLE, EnvVar.LIVE_CALLBACK_URL),
    dependencies=(DependencyGroup.CORE, DependencyGroup.WEB),  # PyJWT: viewer grants' scope
)
LIVE_PUSH = FunctionSpec(
    name="live_push",
    description="Sends each status and step change to the WebSocket connections that follow the study",
    memory_mb=256,
    timeout_s=30,
    env=(EnvVar.CONNECTIONS_TABLE, EnvVar.LIVE_CALLBACK_URL),
)

# Cognito's pre-token-generation trigger (voxelpipe.federation, docs/security.md): made only when
# the deployment's context configures identity providers, so it is not among FUNCTIONS.
TOKEN_CLAIMS = FunctionSpec(
    name="token_claims",
    description="Cognito pre-token-generation: a federated user's tenant and roles from their IdP",
    memory_mb=256,
    timeout_s=5,  # Cognito waits 5 seconds for a trigger
    env=(EnvVar.FEDERATED_PROVIDERS,),
)
# Functions the stack makes only for some deployments (each says when).
OPTIONAL_FUNCTIONS: tuple[FunctionSpec, ...] = (TOKEN_CLAIMS,)

# What the GPU worker (a Batch job, not a Lambda) is told of; its job role may use exactly these.
GPU_WORKER_ENV: tuple[EnvVar, ...] = (
    EnvVar.BUCKET,
    *_STATUS_TABLES,
    EnvVar.MODELS_TABLE,
    EnvVar.GPU_QUEUE_URL,
)


@dataclass(frozen=True)
class ServiceSpec:
    """A long-running container service (ECS Fargate, not a Lambda): its code folder (with its
    Dockerfile), size, the resources it is told of and its own settings. The stack's construct and
    the local runner (`voxelpipe serve --dicom-port`) both read it."""

    name: str
    description: str
    cpu: int  # Fargate CPU units (1024 = 1 vCPU)
    memory_mb: int
    env: tuple[EnvVar, ...]
    settings: dict[EnvVar, str] = field(default_factory=dict)

    @property
    def code_dir(self) -> str:
        return f"functions/{self.name}"


# The DICOM C-STORE receiver (voxelpipe.dimse, docs/dicom-receiver.md): the receive use case writes
# each instance to uploads/, records it (studies, objects) and its transfer, and creating an exam's
# study announces it on the bus. Its memory holds, at worst, each open association's instance
# (up to max_instance_bytes) about three times while it is received and handed over.
DICOM_RECEIVER = ServiceSpec(
    name="dicom_receiver",
    description="The DICOM C-STORE receiver (DIMSE SCP): AE titles mapped to tenants, instances to ingest",
    cpu=2048,
    memory_mb=8192,
    env=(
        EnvVar.BUCKET,
        EnvVar.STUDIES_TABLE,
        EnvVar.OBJECTS_TABLE,
        EnvVar.TRANSFERS_TABLE,
        EnvVar.AUDIT_TABLE,  # each association's instances_received row
        EnvVar.EVENT_BUS_NAME,
        EnvVar.PSEUDONYM_SECRET_ARN,  # exam study ids are keyed (voxelpipe.pseudonyms)
    ),
    settings={
        EnvVar.MAX_UPLOAD_BYTES: str(DEFAULT_MAX_UPLOAD_BYTES),
        # 6 associations of at most 256 MiB instances: within the task's 8 GiB at worst.
        EnvVar.DICOM_SETTINGS: '{"max_associations": 6, "max_instance_bytes": 268435456}',
    },
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
    COMPLETE_TRANSFERS,
    REPROCESS_BATCHES,
    WEBHOOK,
    EGRESS,
    EXPORT,
    SCALER,
    LIVE_AUTHORIZER,
    LIVE,
    LIVE_PUSH,
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
