"""What the use cases need of the outside world, as interfaces: the study store, object storage, the
work queues and the state machine's executions.

`pipeline/`, the API and the GPU workers take these as parameters; `adapters/` implements them for
AWS (DynamoDB through PynamoDB, S3, SQS, Step Functions), and the unit tests pass in-memory fakes
(`tests/fakes.py`) that a contract test holds to the same behaviour as the real ones.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from voxelpipe.identities import IdentityMap
from voxelpipe.machine_clients import MachineClient, Scope
from voxelpipe.messages import ExecutionInput, Priority, WorkItem
from voxelpipe.quotas import Quota
from voxelpipe.records import (
    AccessRecord,
    AuditRecord,
    ConnectionRecord,
    DeliveryRecord,
    ObjectRecord,
    ReprocessBatchRecord,
    StudyRecord,
    SubjectRecord,
    TaskRecord,
    TransferRecord,
)
from voxelpipe.status import StudyStatus

if TYPE_CHECKING:  # pydantic, which the rule sets need, is not every function's to import
    from pydicom.dataset import Dataset

    from voxelpipe.deliveries import DeliveryMessage, DeliveryStatus, OutputObject
    from voxelpipe.destinations import Credentials, DicomWebDestination, DimseDestination, S3Destination
    from voxelpipe.routing import RuleSet

    AnyDestination = DicomWebDestination | DimseDestination | S3Destination

# A change to a record's fields: name -> new value; None removes the field.
Changes = Mapping[str, Any]


class StudyChanged(Exception):
    """A conditional write found the study other than expected (or missing): `current` is how it is."""

    def __init__(self, study_id: str, current: StudyRecord | None) -> None:
        where = "missing" if current is None else f"{current.status} at attempt {current.attempt}"
        super().__init__(f"study {study_id} is {where}")
        self.current = current


@dataclass(frozen=True)
class StudyPage:
    items: list[StudyRecord]
    # Where the next page starts (the index key of the last item); None on the last page.
    next_key: dict[str, Any] | None


@dataclass(frozen=True)
class SubjectPage:
    items: list[SubjectRecord]
    next_key: dict[str, Any] | None  # the table key of the last item; None on the last page


def study_order(study: StudyRecord) -> tuple[str, datetime]:
    """A subject's studies in time order: by scan date (shifted; the creation date where none is
    known), then creation time."""
    return (study.scan_date or study.created_at.date().isoformat(), study.created_at)


class StudyStore(Protocol):
    """Studies, their steps, their audit trail and (DICOM) their objects.

    Every status change is one conditional write (`move_study`), so a stale writer can never
    overwrite a newer outcome; an audit row is never updated.
    """

    def get_study(self, study_id: str) -> StudyRecord | None:
        """The study as last written (a consistent read), or None."""
        ...

    def create_study(self, study: StudyRecord) -> bool:
        """Store a new study; False when its id exists already (nothing is written)."""
        ...

    def move_study(
        self,
        study_id: str,
        *,
        attempt: int,
        sources: frozenset[StudyStatus],
        target: StudyStatus,
        changes: Changes | None = None,
        next_attempt: bool = False,
    ) -> StudyRecord:
        """Move the study to `target` if it is at `attempt` in one of `sources`, in one write that also
        copies the old status to `previous_status`, stamps `updated_at` and applies `changes`. With
        `next_attempt`, the attempt becomes `attempt + 1` (the study must have an input). Raises
        StudyChanged otherwise. Returns the study as written."""
        ...

    def set_study_fields(self, study_id: str, changes: Changes) -> None:
        """Change fields of an existing study (never creates one); StudyChanged when it is missing."""
        ...

    def count_received(self, study_id: str) -> int:
        """Add one to the study's `received` (a network sender wrote a new object); the new count."""
        ...

    def count_arrival(self, study_id: str) -> int:
        """Add one to the study's arrived files (atomically); the new count."""
        ...

    def tenant_studies(
        self,
        tenant: str,
        *,
        status: StudyStatus | None,
        since: datetime | None,
        until: datetime | None,
        limit: int,
        start_key: dict[str, Any] | None,
        attributes: Sequence[str] | None = None,
    ) -> StudyPage:
        """A tenant's studies, newest first; DELETED ones only when `status` asks for them. With
        `attributes`, the records hold only those (and their keys): a cohort export reads no more."""
        ...

    def studies_in_status(
        self,
        status: StudyStatus,
        *,
        updated_before: datetime,
        updated_after: datetime | None = None,
        limit: int | None = None,
    ) -> list[StudyRecord]:
        """Studies in `status` last updated in the range (before the one time, after the other), oldest
        first, up to `limit` (None: all); read from an index, so it may lag the table."""
        ...

    def save_task(self, task: TaskRecord) -> None:
        """Write a step's row (a retried step overwrites its own row)."""
        ...

    def update_task(self, task: TaskRecord, changes: Changes) -> bool:
        """Change an existing task row (never creates one); False when it is gone (a deleted study)."""
        ...

    def tasks_of(self, study_id: str, attempt: int | None = None) -> list[TaskRecord]:
        """The study's step rows (of one attempt, or all), in the order they started."""
        ...

    def append_audit(self, row: AuditRecord) -> bool:
        """Append an audit row; False when a row with its key exists (the row was written before)."""
        ...

    def audit_trail(self, study_id: str) -> list[AuditRecord]:
        """The study's audit rows, oldest first."""
        ...

    def record_object(self, row: ObjectRecord) -> bool:
        """Record one object of a study once; False when its key was recorded before."""
        ...

    def objects_of(self, study_id: str, key_prefix: str) -> list[ObjectRecord]:
        """The study's object rows whose key starts with `key_prefix`."""
        ...

    def forget_tasks(self, study_id: str) -> int:
        """Delete every task row of a (deleted) study; the count."""
        ...

    def forget_objects(self, study_id: str) -> int:
        """Delete every object row of a (deleted) study; the count."""
        ...

    # Subjects (docs/subjects.md): a study's subject is indexed by `subject_key`; the subject's own
    # record summarises its studies.
    def studies_of_subject(self, tenant: str, subject_ref: str) -> list[StudyRecord]:
        """The subject's studies (not DELETED), oldest first (`study_order`); read from an index, so
        a study given its subject a moment ago may be missing."""
        ...

    def get_subject(self, tenant: str, subject_ref: str) -> SubjectRecord | None: ...

    def save_subject(self, subject: SubjectRecord) -> None:
        """Write the subject's record (replacing the one before)."""
        ...

    def forget_subject(self, tenant: str, subject_ref: str) -> None:
        """Delete the subject's record (its last study was deleted); nothing when it has none."""
        ...

    def tenant_subjects(self, tenant: str, *, limit: int, start_key: dict[str, Any] | None) -> SubjectPage:
        """A tenant's subjects, by subject_ref."""
        ...


class BatchStore(Protocol):
    """Bulk reprocess batches (pipeline/batches.py): a batch's row and one row per selected study."""

    def create_batch(self, batch: ReprocessBatchRecord, items: list[ReprocessBatchRecord]) -> None:
        """Store a new batch with its studies' rows (the batch's row last: a batch is listed, and
        advanced, only once every row of it is there)."""
        ...

    def get_batch(self, batch_id: str) -> ReprocessBatchRecord | None: ...

    def items_of(self, batch_id: str) -> list[ReprocessBatchRecord]:
        """The batch's study rows, in the order they were selected."""
        ...

    def set_item(self, item: ReprocessBatchRecord, changes: Changes) -> None:
        """Change a study row of a batch (and stamp its updated_at)."""
        ...

    def close_batch(self, batch: ReprocessBatchRecord) -> None:
        """Every study of the batch ended: it is no longer advanced."""
        ...

    def open_batches(self) -> list[ReprocessBatchRecord]:
        """Every batch not yet done, oldest first (from a sparse index: it may lag the table)."""
        ...

    def tenant_batches(self, tenant: str) -> list[ReprocessBatchRecord]:
        """A tenant's batches, newest first."""
        ...


class TransferStore(Protocol):
    """DICOM exams with instances pending (docs/dicom.md): what arrived over the network, when, and
    whether the transfer that carried it has ended."""

    def note_received(
        self, study_id: str, tenant: str, source: str, *, at: datetime, opened: bool = False
    ) -> None:
        """An object of the study was written at `at` (a record is created when it has none);
        `opened`: the first of a transfer, which is open from now until `note_ended`."""
        ...

    def note_ended(self, study_id: str, at: datetime) -> None:
        """A transfer that carried objects of the study ended: one open transfer fewer (nothing
        when no record exists)."""
        ...

    def get_transfer(self, study_id: str) -> TransferRecord | None: ...

    def pending_transfers(self) -> list[TransferRecord]:
        """Every record: the exams the completion sweep looks at."""
        ...

    def settle(self, transfer: TransferRecord) -> bool:
        """Delete the record if nothing arrived since it was read (the same last time); False when
        something did."""
        ...


@dataclass(frozen=True)
class ObjectInfo:
    size: int
    content_type: str | None
    metadata: dict[str, str]
    version_id: str | None


class ObjectStorage(Protocol):
    """The bucket the pipeline reads uploads from and writes what it derives to."""

    def head(self, key: str) -> ObjectInfo: ...

    def read(self, key: str, first_bytes: int | None = None) -> bytes:
        """The object's bytes; with `first_bytes`, only that many from the start (a range read)."""
        ...

    def iter_chunks(self, key: str, chunk_bytes: int = 1 << 20) -> Iterator[bytes]:
        """The object's bytes in order, at most `chunk_bytes` at a time: large objects never held whole."""
        ...

    def write(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None: ...

    def copy(self, key: str, destination: str) -> None:
        """A server-side copy (the object's bytes never pass through the caller)."""
        ...

    def move(self, key: str, destination: str) -> None: ...

    def delete_all_versions(self, prefix: str) -> int:
        """Delete every version (and delete marker) under `prefix`; the count."""
        ...

    def list_keys(self, prefix: str) -> list[str]: ...


class WorkQueues(Protocol):
    """The priority queues validated studies wait in for an execution."""

    def enqueue(self, item: WorkItem) -> str:
        """Send a study attempt to its priority's queue; the message id."""
        ...

    def backlog(self, priority: Priority) -> int:
        """Messages waiting in, or in flight from, a priority's queue."""
        ...


class Executions(Protocol):
    """The state machine's executions, one per study attempt."""

    def start(self, execution: ExecutionInput) -> datetime | None:
        """Start the attempt's execution; when it started (also for a start repeated while it runs,
        which Step Functions answers with the running execution), or None when one of that name
        exists and is not this start's (another input, or it has ended)."""
        ...

    def status(self, study_id: str, attempt: int) -> str | None:
        """RUNNING, SUCCEEDED, FAILED, TIMED_OUT or ABORTED; None when the attempt has none."""
        ...

    def stop(self, study_id: str, attempt: int, *, error: str, cause: str) -> bool:
        """Stop the attempt's execution if it runs; False when there was none running."""
        ...


class PdfRenderError(RuntimeError):
    """The PDF engine could not render the page (missing, crashed, timed out); the message says why."""


class PdfRenderer(Protocol):
    """Prints a self-contained HTML page to PDF, as a browser prints it (the page's print CSS)."""

    def render_pdf(self, html: str) -> bytes:
        """The PDF's bytes; raises PdfRenderError."""
        ...


class ConnectionStore(Protocol):
    """The live-progress connections (voxelpipe.live)."""

    def save_connection(self, connection: ConnectionRecord) -> None: ...

    def get_connection(self, connection_id: str) -> ConnectionRecord | None: ...

    def set_studies(self, connection_id: str, studies: list[str]) -> bool:
        """Replace what a connection follows; False when the connection is gone."""
        ...

    def delete_connection(self, connection_id: str) -> None: ...

    def tenant_connections(self, tenant: str) -> list[ConnectionRecord]:
        """Every connection of a tenant (one query of the tenant index)."""
        ...


class LiveConnections(Protocol):
    """Sending to a WebSocket connection (API Gateway's Management API, or `voxelpipe serve`'s)."""

    def post(self, connection_id: str, data: bytes) -> bool:
        """Send one message; False when the connection is gone (closed by its client or expired)."""
        ...


@dataclass(frozen=True)
class ActiveRuleSet:
    """The rule set that routes a tenant's exams now: a saved version, or (version None) voxelpipe's
    default rule set (routing.DEFAULT_RULE_SET) when the tenant has none."""

    version: int | None
    rule_set: RuleSet


@dataclass(frozen=True)
class RuleSetVersion:
    """One saved version of a tenant's rule set, deleted or not."""

    version: int
    rule_set: RuleSet
    created_at: datetime
    created_by: str | None
    deleted: bool
    deleted_at: datetime | None
    deleted_by: str | None


class RuleSetNotFound(LookupError):
    """No such version of the tenant's rule set."""


class RuleSets(Protocol):
    """Each tenant's routing rule sets, versioned: saving adds a version, deleting marks one deleted
    (its record stays), and the active one is the newest version not deleted."""

    def current(self, tenant: str) -> ActiveRuleSet:
        """The tenant's active rule set; the default one (version None) when none is saved."""
        ...

    def save(self, tenant: str, rule_set: RuleSet, actor: str | None) -> int:
        """Store `rule_set` as the tenant's next version (one conditional write); the version."""
        ...

    def versions(self, tenant: str) -> list[RuleSetVersion]:
        """Every version the tenant saved, deleted ones included, newest first."""
        ...

    def get(self, tenant: str, version: int) -> RuleSetVersion:
        """One version (deleted or not); RuleSetNotFound when the tenant has no such version."""
        ...

    def delete(self, tenant: str, version: int, actor: str | None) -> RuleSetVersion:
        """Mark a version deleted (again is a no-op); RuleSetNotFound when there is no such version."""
        ...


class DestinationNotFound(LookupError):
    """The tenant has no destination of that name."""


class DestinationExists(ValueError):
    """The tenant has a destination of that name already (names are unique per tenant)."""


class Destinations(Protocol):
    """Each tenant's delivery destinations (voxelpipe.destinations)."""

    def create(self, tenant: str, destination: AnyDestination, actor: str | None) -> None:
        """Store a new destination (one conditional write); DestinationExists if the name is taken."""
        ...

    def list(self, tenant: str) -> list[AnyDestination]: ...

    def get(self, tenant: str, name: str) -> AnyDestination:
        """DestinationNotFound when the tenant has none of that name."""
        ...

    def delete(self, tenant: str, name: str) -> AnyDestination:
        """Remove it; the destination it was. DestinationNotFound when there is none."""
        ...


class DestinationSecrets(Protocol):
    """Destinations' passwords and tokens (Secrets Manager): one secret per destination."""

    def put(self, tenant: str, destination: str, credentials: Credentials) -> str:
        """Store (create or replace) the destination's secret; its id, which the destination keeps."""
        ...

    def get(self, secret_id: str) -> Credentials: ...

    def delete(self, secret_id: str) -> None:
        """Remove the secret (one already gone is no error)."""
        ...


class Deliveries(Protocol):
    """Each study's deliveries (DeliveryRecord), their acknowledgements and outcome."""

    def create(self, record: DeliveryRecord) -> bool:
        """Store a new delivery; False (nothing written) when that attempt has one to that destination."""
        ...

    def get(self, study_id: str, attempt: int, destination: str) -> DeliveryRecord | None: ...

    def for_study(self, study_id: str) -> list[DeliveryRecord]: ...

    def acknowledge(self, record: DeliveryRecord, sop_instance_uid: str) -> None:
        """Record that the destination accepted one object: it is never sent there again."""
        ...

    def tried(self, record: DeliveryRecord, status: DeliveryStatus, error: str | None) -> None:
        """Count one more send and set its outcome (error None: none)."""
        ...

    def set_status(self, record: DeliveryRecord, status: DeliveryStatus, error: str | None) -> None: ...


class DeliveryQueue(Protocol):
    """The delivery queue the egress function takes deliveries from."""

    def send(self, message: DeliveryMessage) -> None: ...


class ReidentificationFailed(RuntimeError):
    """The honest broker could not restore an object's identities (no identity map for the study)."""


class Reidentifier(Protocol):
    """The honest broker's re-identification of one output (voxelpipe.dicom.reidentify with the
    study's identity map): the dataset with the study's original identifiers."""

    def __call__(self, study_id: str, dataset: Dataset) -> Dataset:
        """ReidentificationFailed when the study has no identity map."""
        ...


class SendFailed(RuntimeError):
    """A destination did not take an object (refused it, or could not be reached): retried later."""


class Sender(Protocol):
    """Sends DICOM objects to one destination; each `send` returns once the destination accepted it."""

    def send(self, data: bytes, item: OutputObject) -> None:
        """Send one object (its Part 10 bytes); SendFailed when the destination did not take it."""
        ...

    def close(self) -> None: ...


__all__ = [
    "AccessEntry",
    "AccessLog",
    "ActiveRuleSet",
    "Changes",
    "ClientIssuer",
    "ConnectionStore",
    "Deliveries",
    "DeliveryQueue",
    "DestinationExists",
    "DestinationNotFound",
    "DestinationSecrets",
    "Destinations",
    "Executions",
    "IssuedClient",
    "LiveConnections",
    "MachineClientExists",
    "MachineClients",
    "ObjectInfo",
    "ObjectStorage",
    "PdfRenderError",
    "PdfRenderer",
    "QuotaStore",
    "ReidentificationFailed",
    "Reidentifier",
    "RuleSetNotFound",
    "RuleSetVersion",
    "RuleSets",
    "SendFailed",
    "Sender",
    "StudyChanged",
    "StudyPage",
    "StudyStore",
    "WorkQueues",
]


class IdentityMaps(Protocol):
    """The honest broker's identity maps (docs/dicom.md, "Honest broker"): one per study, written
    at ingest (Prepare: `save`), read only at egress (`get`), deleted with the study (`forget`)."""

    def save(self, study_id: str, identities: IdentityMap) -> None:
        """Add `identities` to the study's map (created when it has none) without reading it:
        entries of an earlier attempt stay, the modules are replaced by these where given."""
        ...

    def get(self, study_id: str) -> IdentityMap | None:
        """The study's map; None when it has none."""
        ...

    def forget(self, study_id: str) -> None:
        """Delete the study's map (nothing when it has none)."""
        ...


class MachineClientExists(ValueError):
    """The tenant has a machine client of that name already."""


class MachineClients(Protocol):
    """Who each machine client is (voxelpipe.machine_clients): the API looks its token's client id
    up here on every machine request."""

    def add(self, client: MachineClient) -> None:
        """Store a new client; MachineClientExists when its tenant has one of that name."""
        ...

    def get(self, client_id: str) -> MachineClient | None:
        """The client (read consistently: a removed one is gone at once); None when unknown."""
        ...

    def of_tenant(self, tenant: str) -> list[MachineClient]:
        """The tenant's clients, by name."""
        ...

    def remove(self, client_id: str) -> None:
        """Forget the client (nothing when it is unknown)."""
        ...


@dataclass(frozen=True)
class IssuedClient:
    """A machine client's credentials as the issuer made them: the secret is shown once, never kept."""

    client_id: str
    client_secret: str


class ClientIssuer(Protocol):
    """Who makes machine clients' credentials: Cognito app clients in AWS, the development issuer
    under `voxelpipe serve`."""

    def create(self, tenant: str, name: str, scopes: frozenset[Scope]) -> IssuedClient: ...

    def delete(self, client_id: str) -> None:
        """Delete the client's credentials (nothing when they are gone already)."""
        ...


@dataclass(frozen=True)
class AccessEntry:
    """One API call on a tenant's data, as the API saw it (voxelpipe.api.audit builds it)."""

    tenant: str
    actor: str
    role: str
    action: str
    method: str
    route: str
    path: str
    status: int
    source_ip: str
    request_id: str
    at: datetime
    user_agent: str | None = None
    study_id: str | None = None
    resource: Mapping[str, Any] = field(default_factory=dict)


class AccessLog(Protocol):
    """The access audit (docs/security.md, "Audit"): rows appended, never changed."""

    def append(self, entry: AccessEntry) -> None:
        """Append the call's row (never over an existing one)."""
        ...

    def page(
        self,
        tenant: str,
        *,
        study_id: str | None = None,
        actor: str | None = None,
        action: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 100,
        start_key: dict[str, Any] | None = None,
    ) -> tuple[list[AccessRecord], dict[str, Any] | None]:
        """A page of the tenant's rows matching every filter, newest first, and where to go on."""
        ...


class QuotaStore(Protocol):
    """Per-tenant quotas (docs/security.md, "Quotas"): limits, and counters changed atomically;
    each `take_*` raises voxelpipe.quotas.QuotaExceeded (and counts nothing) past a limit."""

    defaults: dict[Quota, int]

    def overrides(self, tenant: str) -> dict[Quota, int]: ...

    def limits(self, tenant: str, *, fresh: bool = False) -> dict[Quota, int]: ...

    def set_overrides(self, tenant: str, overrides: dict[Quota, int], actor: str) -> dict[Quota, int]: ...

    def take_request(self, tenant: str, now: datetime) -> None: ...

    def take_study(self, tenant: str, size_bytes: int, now: datetime) -> None: ...

    def release_bytes(self, tenant: str, size_bytes: int) -> None: ...

    def usage(self, tenant: str, now: datetime) -> dict[str, Any]: ...
