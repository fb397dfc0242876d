"""The contract between the stack and the code: resources, the environment variables naming them,
bucket prefixes and event names.

The CDK stack builds its resources from these, the handlers read the environment variables named
here, and the local cloud deploys the template CDK synthesizes from them; nothing about resource
names or wiring is written anywhere else. Each function's spec is in `function_specs`, the
workflow's timings in `workflow_settings`, the GPU half's settings in `gpu_settings`.
"""

from __future__ import annotations

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
    LOW_PRIORITY_QUEUE_URL = "VOXELPIPE_LOW_PRIORITY_QUEUE_URL"  # bulk reprocessing (docs/api.md)
    # Bulk reprocess batches (pipeline/batches.py): their table, and how many studies of one batch
    # may be in flight at once (CDK context `voxelpipe:reprocessMaxInFlight`).
    BATCHES_TABLE = "VOXELPIPE_BATCHES_TABLE"
    BATCH_MAX_IN_FLIGHT = "VOXELPIPE_BATCH_MAX_IN_FLIGHT"
    STATE_MACHINE_ARN = "VOXELPIPE_STATE_MACHINE_ARN"
    MAX_UPLOAD_BYTES = "VOXELPIPE_MAX_UPLOAD_BYTES"
    DICOM_ORIGINALS = "VOXELPIPE_DICOM_ORIGINALS"  # "delete" or "retain" (7 days under work/)
    # Finalize's DICOM SEG outputs: "BINARY" (read everywhere) or "LABELMAP" (docs/dicom-outputs.md).
    DICOM_SEG_TYPE = "VOXELPIPE_DICOM_SEG_TYPE"
    AUTH_MODE = "VOXELPIPE_AUTH_MODE"  # "cognito" behind API Gateway; "dev" for local signed tokens
    EVENT_BUS_NAME = "VOXELPIPE_EVENT_BUS_NAME"  # every status change is put on this bus
    WEBHOOK_SECRET_ARN = "VOXELPIPE_WEBHOOK_SECRET_ARN"  # the key webhook signing keys derive from
    # The key subjects' pseudonyms, date offsets and exam study ids derive from (voxelpipe.pseudonyms).
    PSEUDONYM_SECRET_ARN = "VOXELPIPE_PSEUDONYM_SECRET_ARN"
    SUBJECTS_TABLE = "VOXELPIPE_SUBJECTS_TABLE"  # each tenant's subjects (docs/subjects.md)
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
    REFERENCES_TABLE = "VOXELPIPE_REFERENCES_TABLE"  # registered reference data: atlases, norms tables
    RULES_TABLE = "VOXELPIPE_RULES_TABLE"  # each tenant's routing rule sets, versioned (docs/rules.md)
    # Live progress (docs/api.md, "Live progress"): the WebSocket connections and their subscriptions,
    # the URL clients connect to (wss://… in AWS, ws://… under `voxelpipe serve`), the stage's
    # callback URL the push function posts to (API Gateway Management API), and the user pool the
    # $connect authorizer verifies ID tokens against.
    CONNECTIONS_TABLE = "VOXELPIPE_CONNECTIONS_TABLE"
    # DICOM exams whose instances are arriving over the network (or arrived after their study ended).
    TRANSFERS_TABLE = "VOXELPIPE_TRANSFERS_TABLE"
    # The honest broker's identity maps (docs/dicom.md, "Honest broker"): written by Prepare, read
    # only by egress, under a KMS key of their own.
    IDENTITY_MAP_TABLE = "VOXELPIPE_IDENTITY_MAP_TABLE"
    LIVE_URL = "VOXELPIPE_LIVE_URL"
    LIVE_CALLBACK_URL = "VOXELPIPE_LIVE_CALLBACK_URL"
    USER_POOL_ID = "VOXELPIPE_USER_POOL_ID"
    USER_POOL_CLIENT_ID = "VOXELPIPE_USER_POOL_CLIENT_ID"
    # REST API CORS: the origins (comma-separated) a browser front end may call the API from.
    CORS_ALLOWED_ORIGINS = "VOXELPIPE_CORS_ALLOWED_ORIGINS"
    # The DICOM C-STORE receiver (docs/dicom-receiver.md): our AE titles and their tenants (JSON),
    # the port it listens on, and its timeouts and limits (JSON, optional).
    DICOM_AE_TITLES = "VOXELPIPE_DICOM_AE_TITLES"
    DICOM_PORT = "VOXELPIPE_DICOM_PORT"
    DICOM_SETTINGS = "VOXELPIPE_DICOM_SETTINGS"
    # Deliveries (docs/deliveries.md): each tenant's destinations, each study's deliveries, the queue
    # the egress function takes them from, and the name prefix of the destinations' secrets.
    DESTINATIONS_TABLE = "VOXELPIPE_DESTINATIONS_TABLE"
    DELIVERIES_TABLE = "VOXELPIPE_DELIVERIES_TABLE"
    DELIVERY_QUEUE_URL = "VOXELPIPE_DELIVERY_QUEUE_URL"
    DESTINATION_SECRET_PREFIX = "VOXELPIPE_DESTINATION_SECRET_PREFIX"
    # Cohort exports (GET /measures, docs/api.md): answers up to this many bytes are sent in the
    # response; larger ones go to exports/ in the bucket and the answer is a 303 to a presigned GET.
    # Set for the export Lambda (its response payload is limited to 6 MB); unset, the answer streams.
    EXPORT_INLINE_MAX_BYTES = "VOXELPIPE_EXPORT_INLINE_MAX_BYTES"
    # Where clients reach S3, when that differs from where the code does: the S3 interface VPC
    # endpoint's bucket URL in a private deployment (docs/security.md, "Network modes"), the local
    # S3 gateway under `voxelpipe serve`. Presigned URLs are made for it; unset: S3's own names.
    S3_PUBLIC_ENDPOINT = "VOXELPIPE_S3_PUBLIC_ENDPOINT"
    # Federated sign-in (voxelpipe.federation): each identity provider's tenant and role mapping (JSON).
    FEDERATED_PROVIDERS = "VOXELPIPE_FEDERATED_PROVIDERS"
    # Machine clients (docs/security.md): who each client id is (tenant, scopes, expiry), and the
    # longest life a new client may be given (days).
    MACHINE_CLIENTS_TABLE = "VOXELPIPE_MACHINE_CLIENTS_TABLE"
    MACHINE_CLIENT_MAX_DAYS = "VOXELPIPE_MACHINE_CLIENT_MAX_DAYS"
    # CLI login (docs/security.md): the hosted UI's base URL and the CLI's public app client, which
    # GET /health tells the CLI (`voxelpipe login`).
    LOGIN_BASE_URL = "VOXELPIPE_LOGIN_BASE_URL"
    LOGIN_CLIENT_ID = "VOXELPIPE_LOGIN_CLIENT_ID"
    # The access audit (docs/security.md, "Audit"): one append-only row per API call on a tenant's
    # data, and how many days rows are kept (empty: for ever; DynamoDB's TTL removes older ones).
    ACCESS_AUDIT_TABLE = "VOXELPIPE_ACCESS_AUDIT_TABLE"
    AUDIT_RETENTION_DAYS = "VOXELPIPE_AUDIT_RETENTION_DAYS"
    # Per-tenant quotas (docs/security.md, "Quotas"): the counters and each tenant's overrides, and
    # the deployment's default limits (JSON, from CDK context `voxelpipe:quotas`).
    QUOTAS_TABLE = "VOXELPIPE_QUOTAS_TABLE"
    QUOTA_DEFAULTS = "VOXELPIPE_QUOTA_DEFAULTS"


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
    MODELS = "models/"  # models/{owner}/{name}/{version}/model.{pt|onnx} and model.json: registered models
    # references/{kind}/{owner}/{name}/{version}/{file} and manifest.json: registered reference data
    REFERENCES = "references/"
    EXPORTS = "exports/"  # exports/{tenant}/{export_id}.{csv|parquet}: cohort exports, expiring in a day


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
    LOW_PRIORITY_QUEUE = "LowPriorityQueue"
    BATCHES_TABLE = "ReprocessBatchesTable"
    STATE_MACHINE = "StudyStateMachine"
    EVENT_BUS = "StudyEventBus"
    WEBHOOK_QUEUE = "WebhookQueue"
    WEBHOOK_SECRET = "WebhookSigningSecret"
    PSEUDONYM_SECRET = "PseudonymSecret"
    SUBJECTS_TABLE = "SubjectsTable"
    GPU_QUEUE = "GpuQueue"
    GPU_JOB_QUEUE = "GpuJobQueue"
    GPU_JOB_DEFINITION = "GpuJobDefinition"
    MODELS_TABLE = "ModelsTable"
    REFERENCES_TABLE = "ReferenceDataTable"
    RULES_TABLE = "RoutingRulesTable"
    CONNECTIONS_TABLE = "LiveConnectionsTable"
    TRANSFERS_TABLE = "TransfersTable"
    DESTINATIONS_TABLE = "DeliveryDestinationsTable"
    DELIVERIES_TABLE = "DeliveriesTable"
    DELIVERY_QUEUE = "DeliveryQueue"
    IDENTITY_MAP_TABLE = "IdentityMapTable"
    IDENTITY_MAP_KEY = "IdentityMapKey"  # the identity maps' own KMS key
    MACHINE_CLIENTS_TABLE = "MachineClientsTable"
    LIVE_QUEUE = "LiveQueue"  # status and step events on their way to the push function
    ACCESS_AUDIT_TABLE = "AccessAuditTable"
    QUOTAS_TABLE = "QuotasTable"


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
    EnvVar.LOW_PRIORITY_QUEUE_URL: Resource.LOW_PRIORITY_QUEUE,
    EnvVar.BATCHES_TABLE: Resource.BATCHES_TABLE,
    EnvVar.STATE_MACHINE_ARN: Resource.STATE_MACHINE,
    EnvVar.EVENT_BUS_NAME: Resource.EVENT_BUS,
    EnvVar.WEBHOOK_SECRET_ARN: Resource.WEBHOOK_SECRET,
    EnvVar.PSEUDONYM_SECRET_ARN: Resource.PSEUDONYM_SECRET,
    EnvVar.SUBJECTS_TABLE: Resource.SUBJECTS_TABLE,
    EnvVar.WEBHOOK_QUEUE_URL: Resource.WEBHOOK_QUEUE,
    EnvVar.GPU_QUEUE_URL: Resource.GPU_QUEUE,
    EnvVar.GPU_JOB_QUEUE: Resource.GPU_JOB_QUEUE,
    EnvVar.GPU_JOB_DEFINITION: Resource.GPU_JOB_DEFINITION,
    EnvVar.MODELS_TABLE: Resource.MODELS_TABLE,
    EnvVar.REFERENCES_TABLE: Resource.REFERENCES_TABLE,
    EnvVar.RULES_TABLE: Resource.RULES_TABLE,
    EnvVar.CONNECTIONS_TABLE: Resource.CONNECTIONS_TABLE,
    EnvVar.TRANSFERS_TABLE: Resource.TRANSFERS_TABLE,
    EnvVar.DESTINATIONS_TABLE: Resource.DESTINATIONS_TABLE,
    EnvVar.DELIVERIES_TABLE: Resource.DELIVERIES_TABLE,
    EnvVar.DELIVERY_QUEUE_URL: Resource.DELIVERY_QUEUE,
    EnvVar.IDENTITY_MAP_TABLE: Resource.IDENTITY_MAP_TABLE,
    EnvVar.MACHINE_CLIENTS_TABLE: Resource.MACHINE_CLIENTS_TABLE,
    EnvVar.ACCESS_AUDIT_TABLE: Resource.ACCESS_AUDIT_TABLE,
    EnvVar.QUOTAS_TABLE: Resource.QUOTAS_TABLE,
}
# Audit tables: rows are appended, never updated or deleted. Every role granted one of them gets
# reads and PutItem only, and an explicit Deny of every item change (infra/security.grant_table);
# the tables have deletion protection (infra/tables.py).
APPEND_ONLY_RESOURCES = frozenset({Resource.AUDIT_TABLE, Resource.ACCESS_AUDIT_TABLE})
# Resources of the GPU half: infra/gpu.py wires them (env and grants) itself.
GPU_RESOURCES = frozenset({Resource.GPU_QUEUE, Resource.GPU_JOB_QUEUE, Resource.GPU_JOB_DEFINITION})

# Default upload limit; deployments override it through the environment (past 1 GiB, Prepare's
# memory must grow with it: see voxelpipe/limits.py).  No volume within Limits.max_voxels needs
# more: 2**26 float64 voxels are 512 MiB.
DEFAULT_MAX_UPLOAD_BYTES = 1024**3
# How many studies of one bulk reprocess batch may be in flight at once, unless the deployment says
# otherwise (CDK context `voxelpipe:reprocessMaxInFlight`).
DEFAULT_BATCH_MAX_IN_FLIGHT = 10

# `voxelpipe login`'s loopback redirect: the deployment's app client must allow exactly this
# callback URL (Cognito takes plain http for localhost only, port included; docs/security.md).
CLI_LOGIN_PORT = 8976
CLI_CALLBACK_URL = f"http://localhost:{CLI_LOGIN_PORT}/callback"

FUNCTION_TAG = "voxelpipe:function"  # tag on every Lambda naming its FunctionSpec


def execution_name(study_id: str, attempt: int) -> str:
    """The state machine execution of a study attempt: a duplicate start is a no-op."""
    return f"{study_id}-{attempt}"


# EventBridge: what every status-change event carries as source and detail-type.
EVENT_SOURCE = "voxelpipe"
STATUS_CHANGED = "Study Status Changed"
# A step of a study's attempt started, reported progress, or ended (tracking.py; live progress only).
STEP_CHANGED = "Study Step Changed"
# A delivery reached its destination (every object acknowledged), or gave up (docs/deliveries.md).
STUDY_DELIVERED = "Study Delivered"
DELIVERY_FAILED = "Delivery Failed"


def destination_secret_name(prefix: str, tenant: str, destination: str) -> str:
    """The Secrets Manager secret of a destination's password or token: one per destination."""
    return f"{prefix}{tenant}/{destination}"


# The live-progress WebSocket API's stage: clients connect to {api}/v1, the push posts to its callback URL.
LIVE_STAGE = "v1"
