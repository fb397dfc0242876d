"""In-memory stand-ins for the ports (`voxelpipe.ports`), for unit tests of the pipeline's steps.

`tests/integration/test_study_store.py` holds `InMemoryStudyStore` to the same contract as the
DynamoDB store, so a step that passes its unit tests here behaves the same on DynamoDB.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, TypeVar

from pynamodb.models import Model

from voxelpipe.batches import BATCH_ROW, OPEN, STUDY_ROW_PREFIX
from voxelpipe.identities import IdentityMap
from voxelpipe.limits import Limits
from voxelpipe.messages import ExecutionInput, Priority, WorkItem
from voxelpipe.pipeline.lifecycle import ExamAdapters
from voxelpipe.ports import (
    ActiveRuleSet,
    Changes,
    ObjectInfo,
    RuleSetNotFound,
    RuleSetVersion,
    StudyChanged,
    StudyPage,
    SubjectPage,
    study_order,
)
from voxelpipe.records import (
    AuditRecord,
    ObjectRecord,
    ReprocessBatchRecord,
    StudyRecord,
    SubjectRecord,
    TaskRecord,
    TransferRecord,
    subject_key,
)
from voxelpipe.routing import DEFAULT_RULE_SET, RuleSet
from voxelpipe.status import StudyStatus

R = TypeVar("R", bound=Model)


def _copy(record: R) -> R:
    """A detached copy, as a read from a table gives: changing it changes nothing stored."""
    return copy.deepcopy(record)


def _apply(record: Model, changes: Changes) -> None:
    for name, value in changes.items():
        setattr(record, name, copy.deepcopy(value))


class InMemoryStudyStore:
    """`ports.StudyStore` in dictionaries; every write is atomic (one lock), as DynamoDB's are."""

    def __init__(self) -> None:
        self.studies: dict[str, StudyRecord] = {}
        self.tasks: dict[tuple[str, str], TaskRecord] = {}
        self.audit: dict[tuple[str, str], AuditRecord] = {}
        self.objects: dict[tuple[str, str], ObjectRecord] = {}
        self.subjects: dict[tuple[str, str], SubjectRecord] = {}
        self._lock = threading.Lock()

    def get_study(self, study_id: str) -> StudyRecord | None:
        with self._lock:
            study = self.studies.get(study_id)
            return None if study is None else _copy(study)

    def create_study(self, study: StudyRecord) -> bool:
        with self._lock:
            if study.study_id in self.studies:
                return False
            self.studies[study.study_id] = _copy(study)
            return True

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
        with self._lock:
            study = self.studies.get(study_id)
            allowed = (
                study is not None
                and int(study.attempt) == attempt
                and study.status in sources
                and (not next_attempt or study.input_key is not None)
            )
            if study is None or not allowed:
                raise StudyChanged(study_id, None if study is None else _copy(study))
            study.previous_status = study.status
            study.status = target.value
            study.updated_at = datetime.now(UTC)
            _apply(study, changes or {})
            if next_attempt:
                study.attempt = attempt + 1
            return _copy(study)

    def set_study_fields(self, study_id: str, changes: Changes) -> None:
        with self._lock:
            study = self.studies.get(study_id)
            if study is None:
                raise StudyChanged(study_id, None)
            _apply(study, changes)

    def count_arrival(self, study_id: str) -> int:
        with self._lock:
            study = self.studies.get(study_id)
            if study is None:
                raise StudyChanged(study_id, None)
            study.arrived = int(study.arrived) + 1
            return int(study.arrived)

    def count_received(self, study_id: str) -> int:
        with self._lock:
            study = self.studies.get(study_id)
            if study is None:
                raise StudyChanged(study_id, None)
            study.received = int(study.received) + 1
            return int(study.received)

    def tenant_studies(
        self,
        tenant: str,
        *,
        status: StudyStatus | None,
        since: datetime | None,
        until: datetime | None,
        limit: int,
        start_key: dict[str, Any] | None,
        attributes: Sequence[str] | None = None,  # whole records here: a projection only saves bytes
    ) -> StudyPage:
        with self._lock:
            ordered = sorted(
                (s for s in self.studies.values() if s.tenant == tenant),
                key=lambda s: (s.created_at, s.study_id),
                reverse=True,
            )
        if start_key is not None:
            after = start_key["study_id"]["S"]
            ordered = ordered[[s.study_id for s in ordered].index(after) + 1 :]
        in_range = [
            s
            for s in ordered
            if (since is None or s.created_at >= since) and (until is None or s.created_at <= until)
        ]
        # As DynamoDB's Limit: items read, before the filter.
        page, rest = in_range[:limit], in_range[limit:]
        wanted = [
            _copy(s)
            for s in page
            if (s.status != StudyStatus.DELETED if status is None else s.status == status)
        ]
        last = page[-1] if rest and page else None
        next_key = (
            None
            if last is None
            else {
                "study_id": {"S": last.study_id},
                "tenant": {"S": last.tenant},
                "created_at": {"S": last.created_at.isoformat()},
            }
        )
        return StudyPage(items=wanted, next_key=next_key)

    def studies_in_status(
        self,
        status: StudyStatus,
        *,
        updated_before: datetime,
        updated_after: datetime | None = None,
        limit: int | None = None,
    ) -> list[StudyRecord]:
        with self._lock:
            found = sorted(
                (
                    _copy(s)
                    for s in self.studies.values()
                    if s.status == status
                    and s.updated_at < updated_before
                    and (updated_after is None or s.updated_at >= updated_after)
                ),
                key=lambda s: s.updated_at,
            )
        return found if limit is None else found[:limit]

    def save_task(self, task: TaskRecord) -> None:
        with self._lock:
            self.tasks[(task.study_id, task.task_key)] = _copy(task)

    def update_task(self, task: TaskRecord, changes: Changes) -> bool:
        with self._lock:
            stored = self.tasks.get((task.study_id, task.task_key))
            if stored is None:
                return False
            _apply(stored, changes)
            _apply(task, changes)
            return True

    def tasks_of(self, study_id: str, attempt: int | None = None) -> list[TaskRecord]:
        with self._lock:
            rows = [
                _copy(t)
                for (sid, _), t in self.tasks.items()
                if sid == study_id and (attempt is None or int(t.attempt) == attempt)
            ]
        return sorted(rows, key=lambda t: (t.attempt, t.started_at))

    def append_audit(self, row: AuditRecord) -> bool:
        with self._lock:
            key = (row.study_id, row.event_key)
            if key in self.audit:
                return False
            self.audit[key] = _copy(row)
            return True

    def audit_trail(self, study_id: str) -> list[AuditRecord]:
        with self._lock:
            rows = [_copy(r) for (sid, _), r in self.audit.items() if sid == study_id]
        return sorted(rows, key=lambda r: r.event_key)

    def record_object(self, row: ObjectRecord) -> bool:
        with self._lock:
            key = (row.study_id, row.object_key)
            if key in self.objects:
                return False
            self.objects[key] = _copy(row)
            return True

    def objects_of(self, study_id: str, key_prefix: str) -> list[ObjectRecord]:
        with self._lock:
            return [
                _copy(r)
                for (sid, key), r in sorted(self.objects.items())
                if sid == study_id and key.startswith(key_prefix)
            ]

    def forget_tasks(self, study_id: str) -> int:
        with self._lock:
            keys = [key for key in self.tasks if key[0] == study_id]
            for key in keys:
                del self.tasks[key]
            return len(keys)

    def forget_objects(self, study_id: str) -> int:
        with self._lock:
            keys = [key for key in self.objects if key[0] == study_id]
            for key in keys:
                del self.objects[key]
            return len(keys)

    def studies_of_subject(self, tenant: str, subject_ref: str) -> list[StudyRecord]:
        key = subject_key(tenant, subject_ref)
        with self._lock:
            studies = [
                _copy(s)
                for s in self.studies.values()
                if s.subject_key == key and s.tenant == tenant and s.status != StudyStatus.DELETED
            ]
        return sorted(studies, key=study_order)

    def get_subject(self, tenant: str, subject_ref: str) -> SubjectRecord | None:
        with self._lock:
            subject = self.subjects.get((tenant, subject_ref))
            return None if subject is None else _copy(subject)

    def save_subject(self, subject: SubjectRecord) -> None:
        with self._lock:
            self.subjects[(subject.tenant, subject.subject_ref)] = _copy(subject)

    def forget_subject(self, tenant: str, subject_ref: str) -> None:
        with self._lock:
            self.subjects.pop((tenant, subject_ref), None)

    def tenant_subjects(self, tenant: str, *, limit: int, start_key: dict[str, Any] | None) -> SubjectPage:
        with self._lock:
            ordered = sorted(
                (s for (t, _), s in self.subjects.items() if t == tenant), key=lambda s: s.subject_ref
            )
        if start_key is not None:
            ordered = [s for s in ordered if s.subject_ref > start_key["subject_ref"]["S"]]
        page = [_copy(s) for s in ordered[:limit]]
        more = len(ordered) > limit
        next_key = {"tenant": {"S": tenant}, "subject_ref": {"S": page[-1].subject_ref}} if more else None
        return SubjectPage(items=page, next_key=next_key)


@dataclass
class InMemoryStorage:
    """`ports.ObjectStorage` in a dictionary (one version per key; a delete removes it)."""

    objects: dict[str, tuple[bytes, str]] = field(default_factory=dict)

    def head(self, key: str) -> ObjectInfo:
        data, content_type = self.objects[key]
        return ObjectInfo(size=len(data), content_type=content_type, metadata={}, version_id=None)

    def read(self, key: str, first_bytes: int | None = None) -> bytes:
        data = self.objects[key][0]
        return data if first_bytes is None else data[:first_bytes]

    def iter_chunks(self, key: str, chunk_bytes: int = 1 << 20) -> Iterator[bytes]:
        data = self.objects[key][0]
        for start in range(0, len(data), chunk_bytes):
            yield data[start : start + chunk_bytes]

    def write(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        self.objects[key] = (bytes(data), content_type)

    def copy(self, key: str, destination: str) -> None:
        self.objects[destination] = self.objects[key]

    def move(self, key: str, destination: str) -> None:
        self.objects[destination] = self.objects.pop(key)

    def delete_all_versions(self, prefix: str) -> int:
        keys = [key for key in self.objects if key.startswith(prefix)]
        for key in keys:
            del self.objects[key]
        return len(keys)

    def list_keys(self, prefix: str) -> list[str]:
        return sorted(key for key in self.objects if key.startswith(prefix))


class InMemoryTransferStore:
    """`ports.TransferStore` in a dictionary."""

    def __init__(self) -> None:
        self.transfers: dict[str, TransferRecord] = {}
        self._lock = threading.Lock()

    def note_received(
        self, study_id: str, tenant: str, source: str, *, at: datetime, opened: bool = False
    ) -> None:
        with self._lock:
            record = self.transfers.get(study_id)
            if record is None:
                record = TransferRecord(
                    study_id, tenant=tenant, source=source, first_received_at=at, last_received_at=at
                )
                self.transfers[study_id] = record
            record.tenant, record.source, record.last_received_at = tenant, source, at
            record.open_transfers = int(record.open_transfers or 0) + (1 if opened else 0)

    def note_ended(self, study_id: str, at: datetime) -> None:
        with self._lock:
            if study_id in self.transfers:
                record = self.transfers[study_id]
                record.ended_at = at
                record.open_transfers = int(record.open_transfers or 0) - 1

    def get_transfer(self, study_id: str) -> TransferRecord | None:
        with self._lock:
            record = self.transfers.get(study_id)
            return None if record is None else _copy(record)

    def pending_transfers(self) -> list[TransferRecord]:
        with self._lock:
            return [_copy(record) for record in self.transfers.values()]

    def settle(self, transfer: TransferRecord) -> bool:
        with self._lock:
            current = self.transfers.get(transfer.study_id)
            if current is None or current.last_received_at != transfer.last_received_at:
                return False
            del self.transfers[transfer.study_id]
            return True


class InMemoryRuleSets:
    """RuleSets in a dict (tests/integration/test_rule_sets.py holds it to DynamoRuleSets' contract);
    `rule_sets` are the tenants' active ones to begin with (each saved as version 1)."""

    def __init__(self, rule_sets: dict[str, RuleSet] | None = None) -> None:
        self.saved: dict[str, dict[int, RuleSetVersion]] = {}
        for tenant, rule_set in (rule_sets or {}).items():
            self.save(tenant, rule_set, None)

    def current(self, tenant: str) -> ActiveRuleSet:
        for version in self.versions(tenant):
            if not version.deleted:
                return ActiveRuleSet(version.version, version.rule_set)
        return ActiveRuleSet(None, DEFAULT_RULE_SET)

    def save(self, tenant: str, rule_set: RuleSet, actor: str | None) -> int:
        versions = self.saved.setdefault(tenant, {})
        number = max(versions, default=0) + 1
        versions[number] = RuleSetVersion(number, rule_set, datetime.now(UTC), actor, False, None, None)
        return number

    def versions(self, tenant: str) -> list[RuleSetVersion]:
        return [v for _, v in sorted(self.saved.get(tenant, {}).items(), reverse=True)]

    def get(self, tenant: str, version: int) -> RuleSetVersion:
        try:
            return self.saved[tenant][version]
        except KeyError:
            raise RuleSetNotFound(f"no rule set version {version}") from None

    def delete(self, tenant: str, version: int, actor: str | None) -> RuleSetVersion:
        found = self.get(tenant, version)
        if not found.deleted:
            found = replace(found, deleted=True, deleted_at=datetime.now(UTC), deleted_by=actor)
            self.saved[tenant][version] = found
        return found


def exam_adapters(
    store: InMemoryStudyStore,
    storage: InMemoryStorage,
    queues: RecordingQueues | None = None,
    *,
    transfers: InMemoryTransferStore | None = None,
    rule_sets: InMemoryRuleSets | None = None,
    limits: Limits | None = None,
) -> ExamAdapters:
    """The ingest and exam use cases' adapters, in memory."""
    return ExamAdapters(
        store=store,
        storage=storage,
        queues=queues if queues is not None else RecordingQueues(),
        transfers=transfers if transfers is not None else InMemoryTransferStore(),
        rule_sets=rule_sets if rule_sets is not None else InMemoryRuleSets(),
        limits=limits or Limits(),
    )


@dataclass
class RecordingQueues:
    """`ports.WorkQueues` that keeps what was sent."""

    sent: list[WorkItem] = field(default_factory=list)

    def enqueue(self, item: WorkItem) -> str:
        self.sent.append(item)
        return f"message-{len(self.sent)}"

    def backlog(self, priority: Priority) -> int:
        return sum(1 for item in self.sent if item.priority == priority)


@dataclass
class FakeExecutions:
    """`ports.Executions` as Step Functions answers: a start repeated while the execution runs
    returns it (its start time), one with another input or after it ended is refused."""

    runs: dict[tuple[str, int], tuple[ExecutionInput, str, datetime]] = field(default_factory=dict)
    stopped: list[tuple[str, int, str]] = field(default_factory=list)

    def start(self, execution: ExecutionInput) -> datetime | None:
        key = (execution.study_id, execution.attempt)
        if key in self.runs:
            previous, status, started = self.runs[key]
            return started if previous == execution and status == "RUNNING" else None
        started = datetime.now(UTC)
        self.runs[key] = (execution, "RUNNING", started)
        return started

    def status(self, study_id: str, attempt: int) -> str | None:
        run = self.runs.get((study_id, attempt))
        return None if run is None else run[1]

    def stop(self, study_id: str, attempt: int, *, error: str, cause: str) -> bool:
        run = self.runs.get((study_id, attempt))
        if run is None or run[1] != "RUNNING":
            return False
        self.runs[(study_id, attempt)] = (run[0], "ABORTED", run[2])
        self.stopped.append((study_id, attempt, error))
        return True

    def end(self, study_id: str, attempt: int, status: str = "SUCCEEDED") -> None:
        run = self.runs[(study_id, attempt)]
        self.runs[(study_id, attempt)] = (run[0], status, run[2])


class InMemoryIdentityMaps:
    """IdentityMaps in memory (the contract test holds it to the DynamoDB adapter's behaviour)."""

    def __init__(self) -> None:
        self.maps: dict[str, IdentityMap] = {}

    def save(self, study_id: str, identities: IdentityMap) -> None:
        self.maps[study_id] = self.maps.get(study_id, IdentityMap()).merged(copy.deepcopy(identities))

    def get(self, study_id: str) -> IdentityMap | None:
        found = self.maps.get(study_id)
        return copy.deepcopy(found) if found is not None else None

    def forget(self, study_id: str) -> None:
        self.maps.pop(study_id, None)


@dataclass
class InMemoryBatchStore:
    """`ports.BatchStore` in a dictionary."""

    rows: dict[tuple[str, str], ReprocessBatchRecord] = field(default_factory=dict)

    def create_batch(self, batch: ReprocessBatchRecord, items: list[ReprocessBatchRecord]) -> None:
        for row in [*items, batch]:
            self.rows[(row.batch_id, row.item_key)] = _copy(row)

    def get_batch(self, batch_id: str) -> ReprocessBatchRecord | None:
        row = self.rows.get((batch_id, BATCH_ROW))
        return _copy(row) if row else None

    def items_of(self, batch_id: str) -> list[ReprocessBatchRecord]:
        rows = [
            _copy(r)
            for (b, key), r in self.rows.items()
            if b == batch_id and key.startswith(STUDY_ROW_PREFIX)
        ]
        return sorted(rows, key=lambda row: (row.created_at, row.item_key))

    def set_item(self, item: ReprocessBatchRecord, changes: Any) -> None:
        row = self.rows[(item.batch_id, item.item_key)]
        for name, value in {**changes, "updated_at": datetime.now(UTC)}.items():
            setattr(row, name, value)

    def close_batch(self, batch: ReprocessBatchRecord) -> None:
        row = self.rows[(batch.batch_id, BATCH_ROW)]
        row.open, row.finished_at = None, datetime.now(UTC)

    def open_batches(self) -> list[ReprocessBatchRecord]:
        rows = [r for (_, key), r in self.rows.items() if key == BATCH_ROW and r.open == OPEN]
        return [_copy(r) for r in sorted(rows, key=lambda r: r.created_at)]

    def tenant_batches(self, tenant: str) -> list[ReprocessBatchRecord]:
        rows = [r for (_, key), r in self.rows.items() if key == BATCH_ROW and r.tenant == tenant]
        return [_copy(r) for r in sorted(rows, key=lambda r: r.created_at, reverse=True)]
