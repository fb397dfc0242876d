"""The study store on DynamoDB (PynamoDB models in `records.py`): production's, and the local cloud's.

A conditional write's refusal is recognised in one place for every writer (`adapters.dynamodb`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from pynamodb.attributes import Attribute, NumberAttribute
from pynamodb.exceptions import DoesNotExist, PutError, UpdateError
from pynamodb.expressions.condition import Condition
from pynamodb.expressions.update import Action
from pynamodb.models import Model

from voxelpipe.adapters.dynamodb import refused_by_condition
from voxelpipe.ports import Changes, StudyChanged, StudyPage, SubjectPage, study_order
from voxelpipe.records import AuditRecord, ObjectRecord, StudyRecord, SubjectRecord, TaskRecord, subject_key
from voxelpipe.status import StudyStatus

_INDEX_KEYS = ("study_id", "tenant", "created_at")  # the tenant-created index's key attributes


def _actions(model: type[Model], changes: Changes) -> list[Action]:
    actions: list[Action] = []
    for name, value in changes.items():
        attribute: Attribute[Any] = getattr(model, name)
        actions.append(attribute.remove() if value is None else attribute.set(value))
    return actions


class DynamoStudyStore:
    """`ports.StudyStore` on the studies, tasks, audit and objects tables (names from the environment)."""

    def get_study(self, study_id: str) -> StudyRecord | None:
        try:
            return StudyRecord.get(study_id, consistent_read=True)
        except DoesNotExist:
            return None

    def create_study(self, study: StudyRecord) -> bool:
        try:
            study.save(condition=StudyRecord.study_id.does_not_exist())
        except PutError as error:
            if refused_by_condition(error):
                return False
            raise
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
        record = StudyRecord(study_id)
        condition = (StudyRecord.attempt == attempt) & StudyRecord.status.is_in(*(s.value for s in sources))
        actions: list[Action] = [
            # Right-hand paths read the item as it was before this update.
            StudyRecord.previous_status.set(StudyRecord.status),
            StudyRecord.status.set(target.value),
            StudyRecord.updated_at.set(datetime.now(UTC)),
            *_actions(StudyRecord, changes or {}),
        ]
        if next_attempt:
            actions.append(StudyRecord.attempt.set(attempt + 1))
            condition &= StudyRecord.input_key.exists()
        try:
            record.update(actions=actions, condition=condition)
        except UpdateError as error:
            if refused_by_condition(error):
                raise StudyChanged(study_id, self.get_study(study_id)) from error
            raise
        return record

    def set_study_fields(self, study_id: str, changes: Changes) -> None:
        try:
            StudyRecord(study_id).update(
                actions=_actions(StudyRecord, changes), condition=StudyRecord.study_id.exists()
            )
        except UpdateError as error:
            if refused_by_condition(error):
                raise StudyChanged(study_id, None) from error
            raise

    def count_arrival(self, study_id: str) -> int:
        return self._count(study_id, StudyRecord.arrived)

    def count_received(self, study_id: str) -> int:
        return self._count(study_id, StudyRecord.received)

    def _count(self, study_id: str, attribute: NumberAttribute) -> int:
        record = StudyRecord(study_id)
        try:
            record.update(actions=[attribute.add(1)], condition=StudyRecord.study_id.exists())
        except UpdateError as error:
            if refused_by_condition(error):
                raise StudyChanged(study_id, None) from error
            raise
        return int(getattr(record, attribute.attr_name))

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
        range_condition: Condition | None = None
        if since and until:
            range_condition = StudyRecord.created_at.between(since, until)
        elif since:
            range_condition = StudyRecord.created_at >= since
        elif until:
            range_condition = StudyRecord.created_at <= until
        if status is None:
            status_filter = StudyRecord.status != StudyStatus.DELETED.value
        else:
            status_filter = StudyRecord.status == status.value
        results = StudyRecord.tenant_created.query(
            tenant,
            range_key_condition=range_condition,
            filter_condition=status_filter,
            scan_index_forward=False,
            limit=limit,
            last_evaluated_key=start_key,
            # The index's keys too: the next page starts from the last item's.
            attributes_to_get=None if attributes is None else sorted({*attributes, *_INDEX_KEYS}),
        )
        items = list(results)
        return StudyPage(items=items, next_key=results.last_evaluated_key)

    def studies_in_status(
        self,
        status: StudyStatus,
        *,
        updated_before: datetime,
        updated_after: datetime | None = None,
        limit: int | None = None,
    ) -> list[StudyRecord]:
        updated = (
            StudyRecord.updated_at < updated_before
            if updated_after is None
            else StudyRecord.updated_at.between(updated_after, updated_before)
        )
        return list(StudyRecord.status_updated.query(status.value, updated, limit=limit))

    def save_task(self, task: TaskRecord) -> None:
        task.save()

    def update_task(self, task: TaskRecord, changes: Changes) -> bool:
        try:
            task.update(actions=_actions(TaskRecord, changes), condition=TaskRecord.task_key.exists())
        except UpdateError as error:
            if refused_by_condition(error):
                return False
            raise
        return True

    def tasks_of(self, study_id: str, attempt: int | None = None) -> list[TaskRecord]:
        prefix = None if attempt is None else TaskRecord.task_key.startswith(f"{attempt:04d}#")
        tasks = TaskRecord.query(study_id, range_key_condition=prefix, consistent_read=True)
        return sorted(tasks, key=lambda task: (task.attempt, task.started_at))

    def append_audit(self, row: AuditRecord) -> bool:
        try:
            row.save(condition=AuditRecord.event_key.does_not_exist())
        except PutError as error:
            if refused_by_condition(error):
                return False
            raise
        return True

    def audit_trail(self, study_id: str) -> list[AuditRecord]:
        return list(AuditRecord.query(study_id, consistent_read=True))

    def record_object(self, row: ObjectRecord) -> bool:
        try:
            row.save(condition=ObjectRecord.object_key.does_not_exist())
        except PutError as error:
            if refused_by_condition(error):
                return False
            raise
        return True

    def objects_of(self, study_id: str, key_prefix: str) -> list[ObjectRecord]:
        # DynamoDB refuses an empty key prefix: "" asks for every row.
        condition = ObjectRecord.object_key.startswith(key_prefix) if key_prefix else None
        return list(ObjectRecord.query(study_id, range_key_condition=condition, consistent_read=True))

    def forget_tasks(self, study_id: str) -> int:
        return _delete_all(TaskRecord.query(study_id, consistent_read=True))

    def forget_objects(self, study_id: str) -> int:
        return _delete_all(ObjectRecord.query(study_id, consistent_read=True))

    def studies_of_subject(self, tenant: str, subject_ref: str) -> list[StudyRecord]:
        studies = StudyRecord.subject_created.query(
            subject_key(tenant, subject_ref), filter_condition=StudyRecord.status != StudyStatus.DELETED.value
        )
        # The key names the tenant, but a study is its tenant's only if its record says so too.
        return sorted((s for s in studies if s.tenant == tenant), key=study_order)

    def get_subject(self, tenant: str, subject_ref: str) -> SubjectRecord | None:
        try:
            return SubjectRecord.get(tenant, subject_ref, consistent_read=True)
        except DoesNotExist:
            return None

    def save_subject(self, subject: SubjectRecord) -> None:
        subject.save()

    def forget_subject(self, tenant: str, subject_ref: str) -> None:
        SubjectRecord(tenant, subject_ref).delete()

    def tenant_subjects(self, tenant: str, *, limit: int, start_key: dict[str, Any] | None) -> SubjectPage:
        results = SubjectRecord.query(tenant, limit=limit, last_evaluated_key=start_key)
        items = list(results)
        return SubjectPage(items=items, next_key=results.last_evaluated_key)


def _delete_all(rows: Iterable[Model]) -> int:
    deleted = 0
    for row in rows:
        row.delete()
        deleted += 1
    return deleted
