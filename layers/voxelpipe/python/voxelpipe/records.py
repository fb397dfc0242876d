"""DynamoDB tables as PynamoDB models; the CDK stack derives the tables' schemas from these."""

from __future__ import annotations

import os
from typing import Any

from pynamodb.attributes import (
    BooleanAttribute,
    JSONAttribute,
    ListAttribute,
    MapAttribute,
    NumberAttribute,
    TTLAttribute,
    UnicodeAttribute,
    UTCDateTimeAttribute,
)
from pynamodb.indexes import AllProjection, GlobalSecondaryIndex
from pynamodb.models import Model

from voxelpipe.wiring import EnvVar


class TableNameFromEnv:
    """A table name read from the environment each time it is used.

    Handlers, tests and the local cloud set the environment at different times; reading it
    lazily means a model imported early still talks to the table deployed later.
    """

    def __init__(self, var: EnvVar) -> None:
        self.var = var

    def __get__(self, instance: object, owner: type) -> str:
        try:
            return os.environ[self.var]
        except KeyError:
            raise AttributeError(
                f"environment variable {self.var} (a DynamoDB table name) is not set"
            ) from None


class TenantCreatedIndex(GlobalSecondaryIndex["StudyRecord"]):  # type: ignore[no-untyped-call]
    class Meta:
        index_name = "tenant-created"
        projection = AllProjection()

    tenant = UnicodeAttribute(hash_key=True)
    created_at = UTCDateTimeAttribute(range_key=True)


class StatusUpdatedIndex(GlobalSecondaryIndex["StudyRecord"]):  # type: ignore[no-untyped-call]
    class Meta:
        index_name = "status-updated"
        projection = AllProjection()

    status = UnicodeAttribute(hash_key=True)
    updated_at = UTCDateTimeAttribute(range_key=True)


class SubjectCreatedIndex(GlobalSecondaryIndex["StudyRecord"]):  # type: ignore[no-untyped-call]
    """A subject's studies (docs/subjects.md): `subject_key` is f"{tenant}#{subject_ref}"."""

    class Meta:
        index_name = "subject-created"
        projection = AllProjection()

    subject_key = UnicodeAttribute(hash_key=True)
    created_at = UTCDateTimeAttribute(range_key=True)


def subject_key(tenant: str, subject_ref: str) -> str:
    """The subject index's key of a tenant's subject."""
    return f"{tenant}#{subject_ref}"


class StudyRecord(Model):
    """One study: its current status and attempt, what was uploaded and what was asked of it."""

    class Meta:
        table_name = TableNameFromEnv(EnvVar.STUDIES_TABLE)

    study_id = UnicodeAttribute(hash_key=True)
    tenant = UnicodeAttribute()
    status = UnicodeAttribute()
    attempt = NumberAttribute(default=1)
    created_at = UTCDateTimeAttribute()
    updated_at = UTCDateTimeAttribute()
    analyses = ListAttribute[str](of=UnicodeAttribute, default=list)  # type: ignore[arg-type]
    priority = UnicodeAttribute(default="normal")
    reason = UnicodeAttribute(null=True)  # rejection reason code
    reason_detail = UnicodeAttribute(null=True)
    error = JSONAttribute(null=True)  # {"type", "message", "step", "retryable"} when FAILED
    input_key = UnicodeAttribute(null=True)
    input = JSONAttribute(null=True)  # what validation learnt of the upload (size, sha256, header)
    results_key = UnicodeAttribute(null=True)
    summary = JSONAttribute(null=True)  # headline measures, copied from results.json
    # The version of each analysis the summary's measures came from (results.json's provenance);
    # null for studies finalized before it was kept.
    analysis_versions = JSONAttribute(null=True)  # {analysis: version}
    # Destinations the study's creator asked its outputs be delivered to (docs/deliveries.md).
    destinations = ListAttribute[str](of=UnicodeAttribute, null=True)  # type: ignore[arg-type]
    # What the uploader declared: pseudonymous subject, and the files to expect with their sizes.
    subject = JSONAttribute(null=True)  # {"subject_ref", "age", "sex"}
    manifest = JSONAttribute(null=True)  # [{"name", "size"}]
    webhook_url = UnicodeAttribute(null=True)
    # "nifti" (one file) or "dicom" (a series: many files, or one .zip).
    input_format = UnicodeAttribute(default="nifti")
    arrived = NumberAttribute(default=0)  # how many declared files have arrived and passed
    # Network exams and routed studies: how many distinct objects their senders wrote (ingest
    # counts them again in `arrived`; the exam completes once it has checked them all).
    received = NumberAttribute(default=0)
    parameters = JSONAttribute(null=True)  # per analysis: {name: {parameter: value}}
    uid_key = UnicodeAttribute(null=True)  # DICOM: the study's key for replacement UIDs (hex)
    # The status before the last change (tracking.transition copies it in the same update), for
    # the status-change event.
    previous_status = UnicodeAttribute(null=True)
    cost = JSONAttribute(null=True)  # measured resource use and estimated cost (voxelpipe.cost)
    report = JSONAttribute(null=True)  # report.html/report.pdf: {"html"|"pdf": {status, key|error}}
    # DICOM exams (docs/dicom.md). How the study arrived: "upload" (POST /studies), "stow", "c-store",
    # or "routed" (a further series of an exam, given a study of its own).
    source = UnicodeAttribute(null=True)
    exam_id = UnicodeAttribute(null=True)  # a routed study: the exam study it came from
    series_uid = UnicodeAttribute(null=True)  # the (pseudonymous) series this study processes
    # The exam study: {"study_instance_uid", "rule_set": {version}, "series": [ExamSeries.as_json()]}
    dicom = JSONAttribute(null=True)
    # Subjects over time (docs/subjects.md): the subject index's key (f"{tenant}#{subject_ref}", set
    # with the subject) and the scan's date, already shifted by the subject's offset (ISO YYYY-MM-DD;
    # never the real date).
    subject_key = UnicodeAttribute(null=True)
    scan_date = UnicodeAttribute(null=True)

    tenant_created = TenantCreatedIndex()
    status_updated = StatusUpdatedIndex()
    subject_created = SubjectCreatedIndex()


class SubjectRecord(Model):
    """A tenant's pseudonymous subject (docs/subjects.md), summarised from its studies whenever one
    of them gets or loses the subject: sex, the latest age, the first and last (shifted) scan dates
    and how many studies it has. Its studies themselves are read through the subject index."""

    class Meta:
        table_name = TableNameFromEnv(EnvVar.SUBJECTS_TABLE)

    tenant = UnicodeAttribute(hash_key=True)
    subject_ref = UnicodeAttribute(range_key=True)
    sex = UnicodeAttribute(null=True)
    age = NumberAttribute(null=True)  # years, at the latest study that says
    first_scan_date = UnicodeAttribute(null=True)
    last_scan_date = UnicodeAttribute(null=True)
    studies = NumberAttribute(default=0)
    created_at = UTCDateTimeAttribute()
    updated_at = UTCDateTimeAttribute()


class TaskRecord(Model):
    """One step of one attempt: sort key `{attempt:04d}#{step}`."""

    class Meta:
        table_name = TableNameFromEnv(EnvVar.TASKS_TABLE)

    study_id = UnicodeAttribute(hash_key=True)
    task_key = UnicodeAttribute(range_key=True)
    attempt = NumberAttribute()
    step = UnicodeAttribute()
    status = UnicodeAttribute()
    progress = NumberAttribute(default=0)
    started_at = UTCDateTimeAttribute()
    finished_at = UTCDateTimeAttribute(null=True)
    duration_ms = NumberAttribute(null=True)
    error = JSONAttribute(null=True)
    detail = JSONAttribute(null=True)
    tenant = UnicodeAttribute(null=True)  # the study's, for the step-change events (tracking.py)


class AuditRecord(Model):
    """Append-only: who did what to which study, when, from where. Sort key `{iso time}#{uuid}`."""

    class Meta:
        table_name = TableNameFromEnv(EnvVar.AUDIT_TABLE)

    study_id = UnicodeAttribute(hash_key=True)
    event_key = UnicodeAttribute(range_key=True)
    at = UTCDateTimeAttribute()
    actor = UnicodeAttribute()
    action = UnicodeAttribute()
    source = UnicodeAttribute()
    detail = JSONAttribute(null=True)


class ObjectRecord(Model):
    """What ingest learnt of each object of a multi-file (DICOM) study.

    Sort keys `file#{name}` (one per declared file: it arrived and passed) and
    `instance#{uid}` (one per SOP instance, by its study-keyed hash: a duplicate is recorded once,
    with the header summary the series checks need; no raw UIDs are stored).
    """

    class Meta:
        table_name = TableNameFromEnv(EnvVar.OBJECTS_TABLE)

    study_id = UnicodeAttribute(hash_key=True)
    object_key = UnicodeAttribute(range_key=True)
    source = UnicodeAttribute()  # the S3 key it came from
    summary = JSONAttribute(null=True)


class TransferRecord(Model):
    """A DICOM exam whose instances arrive over the network (STOW-RS, C-STORE), or were routed to a
    study of their own: kept while instances are pending, deleted once they are handed to the study.

    `last_received_at` is when the last object was written; `ended_at` the end of the last transfer
    (request or association) that carried one; `open_transfers` how many are still open. (The
    object counts live on the study: `received`, `arrived`.)
    """

    class Meta:
        table_name = TableNameFromEnv(EnvVar.TRANSFERS_TABLE)

    study_id = UnicodeAttribute(hash_key=True)
    tenant = UnicodeAttribute()
    source = UnicodeAttribute()  # "stow" | "c-store" | "routed"
    # Transfers that carried an instance and have not ended: an exam is never complete while one
    # is open, however long it has been quiet (unless it went stale: a receiver that died).
    open_transfers = NumberAttribute(default=0)
    first_received_at = UTCDateTimeAttribute()
    last_received_at = UTCDateTimeAttribute()
    ended_at = UTCDateTimeAttribute(null=True)


class ModelRecord(Model):
    """One version of a registered model (bring your own model), owned by the tenant that registered
    it, or by the deployment (keys.DEPLOYMENT_OWNER) when an operator published it.

    Hash key `owner`, sort key `name_version` = `{name}#{version:010d}`: an owner's models in one
    query, a name's versions in order. PENDING until its file is uploaded and verified (size,
    sha256), then READY; RETIRED once taken out of use (its files deleted). The file lives at
    `object_key` (models/{owner}/{name}/{version}/model.{pt|onnx}), its ModelSpec is `spec`.
    """

    class Meta:
        table_name = TableNameFromEnv(EnvVar.MODELS_TABLE)

    owner = UnicodeAttribute(hash_key=True)
    name_version = UnicodeAttribute(range_key=True)
    name = UnicodeAttribute()
    version = NumberAttribute()
    format = UnicodeAttribute()  # "torchscript" | "onnx"
    spec = JSONAttribute()
    object_key = UnicodeAttribute()
    size = NumberAttribute()
    sha256 = UnicodeAttribute(null=True)  # declared at registration, or measured at completion
    status = UnicodeAttribute()  # "PENDING" | "READY" | "RETIRED"
    created_at = UTCDateTimeAttribute()
    created_by = UnicodeAttribute(null=True)
    ready_at = UTCDateTimeAttribute(null=True)
    retired_at = UTCDateTimeAttribute(null=True)
    retired_by = UnicodeAttribute(null=True)

    @staticmethod
    def sort_key(name: str, version: int) -> str:
        return f"{name}#{version:010d}"


class ReferenceRecord(Model):
    """One version of registered reference data (voxelpipe.references): an atlas or a norms table,
    owned by a tenant or by the deployment (keys.DEPLOYMENT_OWNER).

    Hash key `owner`, sort key `kind_name_version` = `{kind}#{name}#{version:010d}`: an owner's
    data of one kind in one query, a name's versions in order. PENDING until its files are uploaded
    and verified, then READY; RETIRED once taken out of use (its files deleted, the record kept).
    `files` maps each role to {"key", "size", "sha256"}; `metadata` holds the licence, citation,
    commercial_use (and an atlas's space); `summary` what verification found.
    """

    class Meta:
        table_name = TableNameFromEnv(EnvVar.REFERENCES_TABLE)

    owner = UnicodeAttribute(hash_key=True)
    kind_name_version = UnicodeAttribute(range_key=True)
    kind = UnicodeAttribute()  # "atlas" | "norms" | "rates"
    name = UnicodeAttribute()
    version = NumberAttribute()
    status = UnicodeAttribute()  # "PENDING" | "READY" | "RETIRED"
    metadata = JSONAttribute()
    files = JSONAttribute()
    summary = JSONAttribute(null=True)
    created_at = UTCDateTimeAttribute()
    created_by = UnicodeAttribute(null=True)
    ready_at = UTCDateTimeAttribute(null=True)
    retired_at = UTCDateTimeAttribute(null=True)
    retired_by = UnicodeAttribute(null=True)

    @staticmethod
    def sort_key(kind: str, name: str, version: int) -> str:
        return f"{kind}#{name}#{version:010d}"


class RuleSetRecord(Model):
    """One version of a tenant's routing rule set (voxelpipe.routing, docs/rules.md).

    Hash key `tenant`, sort key `version` (1, 2, ...: a new version for every change, never an
    update of one). `rule_set` is the RuleSet's JSON. A deleted version keeps its record
    (`deleted`, with who and when) so decisions that name it can still be explained; the active rule
    set is the newest version not deleted (the default rule set when there is none).
    """

    class Meta:
        table_name = TableNameFromEnv(EnvVar.RULES_TABLE)

    tenant = UnicodeAttribute(hash_key=True)
    version = NumberAttribute(range_key=True)
    rule_set = JSONAttribute()
    created_at = UTCDateTimeAttribute()
    created_by = UnicodeAttribute(null=True)
    deleted = BooleanAttribute(default=False)
    deleted_at = UTCDateTimeAttribute(null=True)
    deleted_by = UnicodeAttribute(null=True)


class DestinationRecord(Model):
    """One delivery destination of a tenant (voxelpipe.destinations, docs/deliveries.md): hash key
    `tenant`, sort key `name`; `destination` is its JSON, naming its secret, never holding it."""

    class Meta:
        table_name = TableNameFromEnv(EnvVar.DESTINATIONS_TABLE)

    tenant = UnicodeAttribute(hash_key=True)
    name = UnicodeAttribute(range_key=True)
    destination = JSONAttribute()
    created_at = UTCDateTimeAttribute()
    created_by = UnicodeAttribute(null=True)


class DeliveryRecord(Model):
    """One study attempt's outputs to one destination (voxelpipe.deliveries): hash key `study_id`,
    sort key `{attempt:06d}#{destination}`. `objects` are the keys to send, `acknowledged` the SOP
    Instance UIDs the destination accepted (never sent again), `attempts` the sends tried."""

    class Meta:
        table_name = TableNameFromEnv(EnvVar.DELIVERIES_TABLE)

    study_id = UnicodeAttribute(hash_key=True)
    delivery = UnicodeAttribute(range_key=True)
    tenant = UnicodeAttribute()
    destination = UnicodeAttribute()
    attempt = NumberAttribute()
    internal = BooleanAttribute(default=False)
    objects = ListAttribute[str](of=UnicodeAttribute, default=list)  # type: ignore[arg-type]
    acknowledged = ListAttribute[str](of=UnicodeAttribute, default=list)  # type: ignore[arg-type]
    attempts = NumberAttribute(default=0)
    status = UnicodeAttribute()
    error = UnicodeAttribute(null=True)
    created_at = UTCDateTimeAttribute()
    updated_at = UTCDateTimeAttribute()


class TenantClientsIndex(GlobalSecondaryIndex["MachineClientRecord"]):  # type: ignore[no-untyped-call]
    class Meta:
        index_name = "tenant-name"
        projection = AllProjection()

    tenant = UnicodeAttribute(hash_key=True)
    name = UnicodeAttribute(range_key=True)


class MachineClientRecord(Model):
    """One machine client (voxelpipe.machine_clients): what a client-credentials access token does
    not say about its client — tenant, name, scopes, creator, expiry. Hash key `client_id` (the API
    reads it on every machine request, consistently: a deleted client is refused at once); the
    `tenant-name` index lists a tenant's clients. Never the secret."""

    class Meta:
        table_name = TableNameFromEnv(EnvVar.MACHINE_CLIENTS_TABLE)

    client_id = UnicodeAttribute(hash_key=True)
    tenant = UnicodeAttribute()
    name = UnicodeAttribute()
    scopes = ListAttribute[str](of=UnicodeAttribute, default=list)  # type: ignore[arg-type]
    created_at = UTCDateTimeAttribute()
    created_by = UnicodeAttribute(null=True)
    expires_at = UTCDateTimeAttribute()
    tenant_name = TenantClientsIndex()


class TenantConnectionsIndex(GlobalSecondaryIndex["ConnectionRecord"]):  # type: ignore[no-untyped-call]
    class Meta:
        index_name = "tenant-connections"
        projection = AllProjection()

    tenant = UnicodeAttribute(hash_key=True)


class ConnectionRecord(Model):
    """One live-progress WebSocket connection (docs/api.md): who holds it and what it follows.

    Written at $connect with the identity its token proved: a user (`role` set) or a viewer grant
    (`grant_study_id` or `grant_subject_ref` set, what `ViewerGrant.covers` checks). `studies`
    holds the study ids it subscribed to, or `*` for every study of its tenant (users only).
    `expires_at` is DynamoDB's TTL: API Gateway closes a connection after 2 hours, and a grant's
    connection is not served past the grant's expiry.
    """

    class Meta:
        table_name = TableNameFromEnv(EnvVar.CONNECTIONS_TABLE)

    connection_id = UnicodeAttribute(hash_key=True)
    tenant = UnicodeAttribute()
    subject = UnicodeAttribute()
    role = UnicodeAttribute(null=True)
    grant_study_id = UnicodeAttribute(null=True)
    grant_subject_ref = UnicodeAttribute(null=True)
    studies = ListAttribute[str](of=UnicodeAttribute, default=list)  # type: ignore[arg-type]
    connected_at = UTCDateTimeAttribute()
    expires_at = TTLAttribute()

    tenant_connections = TenantConnectionsIndex()


class IdentityMapRecord(Model):
    """The honest broker's map of one study (voxelpipe.identities.IdentityMap; docs/dicom.md,
    "Honest broker"): `uids` maps each pseudonymous UID to the original it replaced, `patient` and
    `study` hold the original patient and study modules as DICOM JSON.

    In a table of its own under a KMS key of its own: Prepare adds to it without reading it (map
    updates keyed by UID), only egress reads it, deleting the study deletes it. One item per study
    (DynamoDB's 400 KB: some 3,000 UIDs, an exam of single-frame series of that many instances).
    """

    class Meta:
        table_name = TableNameFromEnv(EnvVar.IDENTITY_MAP_TABLE)

    study_id = UnicodeAttribute(hash_key=True)
    uids: MapAttribute[str, str] = MapAttribute(default=dict)  # type: ignore[no-untyped-call]
    patient = JSONAttribute(null=True)
    study = JSONAttribute(null=True)
    updated_at = UTCDateTimeAttribute(null=True)


class _AccessIndex(GlobalSecondaryIndex["AccessRecord"]):  # type: ignore[no-untyped-call]
    """A tenant's access rows by one more field, newest first by `event_key` (its time)."""

    class Meta:
        projection = AllProjection()

    event_key = UnicodeAttribute(range_key=True)


class AccessActorIndex(_AccessIndex):  # type: ignore[no-untyped-call]
    class Meta(_AccessIndex.Meta):
        index_name = "actor-time"

    tenant_actor = UnicodeAttribute(hash_key=True)


class AccessActionIndex(_AccessIndex):  # type: ignore[no-untyped-call]
    class Meta(_AccessIndex.Meta):
        index_name = "action-time"

    tenant_action = UnicodeAttribute(hash_key=True)


class AccessStudyIndex(_AccessIndex):  # type: ignore[no-untyped-call]
    class Meta(_AccessIndex.Meta):
        index_name = "study-time"

    tenant_study = UnicodeAttribute(hash_key=True)


class AccessRecord(Model):
    """One API call on a tenant's data (docs/security.md, "Audit"): who, what, when, from where.

    Append-only: written once per call by the API (voxelpipe.api.audit), never updated or deleted
    by any role (infra/security.grant_table). Hash key `tenant`, sort key `event_key` =
    `{time, ISO 8601 UTC with microseconds and Z}#{request id}`, so a tenant's rows are in time
    order and a time range is a key range. The indexes answer "by this actor", "this action",
    "this study" within a tenant (`{tenant}#{value}` keys; a row without a study is in no study's).
    `expires_at` is DynamoDB's TTL when the deployment sets a retention (default: kept).
    """

    class Meta:
        table_name = TableNameFromEnv(EnvVar.ACCESS_AUDIT_TABLE)

    tenant = UnicodeAttribute(hash_key=True)
    event_key = UnicodeAttribute(range_key=True)
    at = UTCDateTimeAttribute()
    request_id = UnicodeAttribute()
    actor = UnicodeAttribute()  # the token's subject (a person, or a machine client)
    role = UnicodeAttribute()  # the caller's role, or "viewer-grant" for a viewer link's holder
    action = UnicodeAttribute()  # the route's declared audit action, e.g. "study.read"
    method = UnicodeAttribute()
    route = UnicodeAttribute()  # the route's path template, e.g. /studies/{study_id}
    path = UnicodeAttribute()  # the path called (pseudonymous ids only)
    resource = JSONAttribute(null=True)  # the path's parameters, and what the route noted
    study_id = UnicodeAttribute(null=True)
    status = NumberAttribute()  # the HTTP status answered
    source_ip = UnicodeAttribute()
    user_agent = UnicodeAttribute(null=True)
    tenant_actor = UnicodeAttribute()
    tenant_action = UnicodeAttribute()
    tenant_study = UnicodeAttribute(null=True)
    expires_at = TTLAttribute(null=True)

    actor_time = AccessActorIndex()
    action_time = AccessActionIndex()
    study_time = AccessStudyIndex()


class QuotaRecord(Model):
    """A tenant's quota state (docs/security.md, "Quotas"), one item per `counter`:

    - `limits`: the tenant's overrides of the deployment's default limits (`limits`, JSON);
    - `studies#{YYYY-MM-DD}`: studies created that UTC day; `requests#{YYYY-MM-DDTHH:MM}`: API
      requests that minute (both expire through `expires_at`, DynamoDB's TTL);
    - `stored_bytes`: the declared sizes of the tenant's studies not deleted.

    Counters change only by conditional ADD (one write: atomic under concurrency).
    """

    class Meta:
        table_name = TableNameFromEnv(EnvVar.QUOTAS_TABLE)

    tenant = UnicodeAttribute(hash_key=True)
    counter = UnicodeAttribute(range_key=True)
    used = NumberAttribute(null=True)
    limits = JSONAttribute(null=True)
    updated_at = UTCDateTimeAttribute(null=True)
    updated_by = UnicodeAttribute(null=True)
    expires_at = TTLAttribute(null=True)


# Every study's subscription, in `ConnectionRecord.studies`.
ALL_STUDIES = "*"


def ttl_attribute(model: type[Model]) -> str | None:
    """The name of a model's TTL attribute (the stack enables DynamoDB's TTL on it), if any."""
    for name, attribute in model.get_attributes().items():
        if isinstance(attribute, TTLAttribute):
            return attribute.attr_name or name
    return None


class TenantBatchesIndex(GlobalSecondaryIndex["ReprocessBatchRecord"]):  # type: ignore[no-untyped-call]
    """A tenant's batches, newest last (only a batch's own row carries `tenant`: a sparse index)."""

    class Meta:
        index_name = "tenant-created"
        projection = AllProjection()

    tenant = UnicodeAttribute(hash_key=True)
    created_at = UTCDateTimeAttribute(range_key=True)


class OpenBatchesIndex(GlobalSecondaryIndex["ReprocessBatchRecord"]):  # type: ignore[no-untyped-call]
    """The batches not yet done (`open` is set on a batch's row until its last study ends), which
    the sweep advances: sparse, so a done batch costs the sweep nothing."""

    class Meta:
        index_name = "open-created"
        projection = AllProjection()

    open = UnicodeAttribute(hash_key=True)
    created_at = UTCDateTimeAttribute(range_key=True)


class ReprocessBatchRecord(Model):
    """A bulk reprocess (pipeline/batches.py): the batch's own row (sort key `batch`: tenant, query,
    what the studies are reprocessed with, how many may be in flight), and one row per selected
    study (sort key `study#{study_id}`: its state, the attempt opened, why skipped or failed), so
    a batch of thousands never meets DynamoDB's 400 KB item limit."""

    class Meta:
        table_name = TableNameFromEnv(EnvVar.BATCHES_TABLE)

    batch_id = UnicodeAttribute(hash_key=True)
    item_key = UnicodeAttribute(range_key=True)
    created_at = UTCDateTimeAttribute()
    updated_at = UTCDateTimeAttribute()
    # The batch's row.
    tenant = UnicodeAttribute(null=True)
    open = UnicodeAttribute(null=True)  # "open" until every study ended (the index's key)
    actor = UnicodeAttribute(null=True)
    where = JSONAttribute(null=True)  # the query that selected the studies
    analyses = JSONAttribute(null=True)  # None: each study keeps its own
    parameters = JSONAttribute(null=True)
    max_in_flight = NumberAttribute(null=True)
    selected = NumberAttribute(null=True)
    finished_at = UTCDateTimeAttribute(null=True)
    # A study's row.
    study_id = UnicodeAttribute(null=True)
    state = UnicodeAttribute(null=True)  # voxelpipe.batches.ItemState
    attempt = NumberAttribute(null=True)  # the attempt the batch opened (or is opening)
    reason = UnicodeAttribute(null=True)  # skipped or rejected: why
    error = JSONAttribute(null=True)  # failed: the attempt's error

    tenant_created = TenantBatchesIndex()
    open_created = OpenBatchesIndex()


STATUS_MODELS: dict[EnvVar, type[Model]] = {
    EnvVar.STUDIES_TABLE: StudyRecord,
    EnvVar.TASKS_TABLE: TaskRecord,
    EnvVar.AUDIT_TABLE: AuditRecord,
    EnvVar.OBJECTS_TABLE: ObjectRecord,
    EnvVar.TRANSFERS_TABLE: TransferRecord,
    EnvVar.SUBJECTS_TABLE: SubjectRecord,
    EnvVar.BATCHES_TABLE: ReprocessBatchRecord,
}

# The registries' tables (built by the stack like the status tables): models, reference data, and
# the tenants' routing rule sets.
REGISTRY_MODELS: dict[EnvVar, type[Model]] = {
    EnvVar.MODELS_TABLE: ModelRecord,
    EnvVar.REFERENCES_TABLE: ReferenceRecord,
    EnvVar.RULES_TABLE: RuleSetRecord,
    EnvVar.DESTINATIONS_TABLE: DestinationRecord,
    EnvVar.DELIVERIES_TABLE: DeliveryRecord,
    EnvVar.MACHINE_CLIENTS_TABLE: MachineClientRecord,
}

# The live-progress connections (built by the stack like the others, with DynamoDB's TTL).
LIVE_MODELS: dict[EnvVar, type[Model]] = {EnvVar.CONNECTIONS_TABLE: ConnectionRecord}

# Each tenant's access audit and quotas (built by the stack like the others; the access audit is
# append-only: wiring.APPEND_ONLY_RESOURCES).
TENANT_MODELS: dict[EnvVar, type[Model]] = {
    EnvVar.ACCESS_AUDIT_TABLE: AccessRecord,
    EnvVar.QUOTAS_TABLE: QuotaRecord,
}

# The identity maps: a table of their own, under their own key (infra/stack.py builds it apart).
IDENTITY_MODELS: dict[EnvVar, type[Model]] = {EnvVar.IDENTITY_MAP_TABLE: IdentityMapRecord}

# The Powertools idempotency table's schema (its defaults: key "id", TTL "expiration").
IDEMPOTENCY_KEY_ATTRIBUTE = "id"
IDEMPOTENCY_TTL_ATTRIBUTE = "expiration"


def table_schema(model: type[Model]) -> dict[str, Any]:
    """Key schema, attribute definitions and GSIs of a model, in DynamoDB's API shape."""
    return model._get_schema()  # type: ignore[return-value]
