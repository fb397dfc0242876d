"""The tenants' routing rule sets in DynamoDB (RuleSetRecord): the RuleSets port."""

from __future__ import annotations

from datetime import UTC, datetime

from pynamodb.exceptions import PutError
from pynamodb.expressions.update import Action

from voxelpipe.adapters.dynamodb import refused_by_condition
from voxelpipe.ports import ActiveRuleSet, RuleSetNotFound, RuleSetVersion
from voxelpipe.records import RuleSetRecord
from voxelpipe.routing import DEFAULT_RULE_SET, RuleSet

# Two saves at once: each takes the next number, one write wins and the other tries the number after.
_SAVE_ATTEMPTS = 5


def _version(record: RuleSetRecord) -> RuleSetVersion:
    return RuleSetVersion(
        version=int(record.version),
        rule_set=RuleSet.model_validate(record.rule_set),
        created_at=record.created_at,
        created_by=record.created_by,
        deleted=bool(record.deleted),
        deleted_at=record.deleted_at,
        deleted_by=record.deleted_by,
    )


class DynamoRuleSets:
    """RuleSets on the rules table (EnvVar.RULES_TABLE)."""

    def _records(self, tenant: str) -> list[RuleSetRecord]:
        return list(RuleSetRecord.query(tenant, scan_index_forward=False, consistent_read=True))

    def current(self, tenant: str) -> ActiveRuleSet:
        for record in RuleSetRecord.query(tenant, scan_index_forward=False, consistent_read=True):
            if not record.deleted:
                return ActiveRuleSet(int(record.version), RuleSet.model_validate(record.rule_set))
        return ActiveRuleSet(None, DEFAULT_RULE_SET)

    def save(self, tenant: str, rule_set: RuleSet, actor: str | None) -> int:
        for _ in range(_SAVE_ATTEMPTS):
            latest = next(iter(RuleSetRecord.query(tenant, scan_index_forward=False, limit=1)), None)
            version = 1 if latest is None else int(latest.version) + 1
            record = RuleSetRecord(
                tenant,
                version,
                rule_set=rule_set.as_json(),
                created_at=datetime.now(UTC),
                created_by=actor,
                deleted=False,
            )
            try:
                record.save(condition=RuleSetRecord.version.does_not_exist())
                return version
            except PutError as error:
                if not refused_by_condition(error):
                    raise
        raise RuntimeError(f"could not allocate a rule set version for tenant {tenant}")

    def versions(self, tenant: str) -> list[RuleSetVersion]:
        return [_version(record) for record in self._records(tenant)]

    def _record(self, tenant: str, version: int) -> RuleSetRecord:
        try:
            return RuleSetRecord.get(tenant, version, consistent_read=True)
        except RuleSetRecord.DoesNotExist:
            raise RuleSetNotFound(f"no rule set version {version}") from None

    def get(self, tenant: str, version: int) -> RuleSetVersion:
        return _version(self._record(tenant, version))

    def delete(self, tenant: str, version: int, actor: str | None) -> RuleSetVersion:
        record = self._record(tenant, version)
        if not record.deleted:
            actions: list[Action] = [
                RuleSetRecord.deleted.set(True),
                RuleSetRecord.deleted_at.set(datetime.now(UTC)),
            ]
            if actor is not None:
                actions.append(RuleSetRecord.deleted_by.set(actor))
            # Never an update that creates: the record is there (versions are never removed).
            record.update(actions=actions, condition=RuleSetRecord.version.exists())
        return _version(record)
