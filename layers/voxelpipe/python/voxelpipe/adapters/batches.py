"""Bulk reprocess batches in DynamoDB (ReprocessBatchRecord): the BatchStore port."""

from __future__ import annotations

from datetime import UTC, datetime

from voxelpipe.batches import BATCH_ROW, OPEN, STUDY_ROW_PREFIX
from voxelpipe.ports import Changes
from voxelpipe.records import ReprocessBatchRecord


class DynamoBatchStore:
    """Batches on the batches table (EnvVar.BATCHES_TABLE)."""

    def create_batch(self, batch: ReprocessBatchRecord, items: list[ReprocessBatchRecord]) -> None:
        with ReprocessBatchRecord.batch_write() as writer:
            for item in items:
                writer.save(item)
        batch.save()

    def get_batch(self, batch_id: str) -> ReprocessBatchRecord | None:
        try:
            return ReprocessBatchRecord.get(batch_id, BATCH_ROW, consistent_read=True)
        except ReprocessBatchRecord.DoesNotExist:
            return None

    def items_of(self, batch_id: str) -> list[ReprocessBatchRecord]:
        rows = ReprocessBatchRecord.query(
            batch_id,
            range_key_condition=ReprocessBatchRecord.item_key.startswith(STUDY_ROW_PREFIX),
            consistent_read=True,
        )
        return sorted(rows, key=lambda row: (row.created_at, row.item_key))

    def set_item(self, item: ReprocessBatchRecord, changes: Changes) -> None:
        actions = [
            getattr(ReprocessBatchRecord, name).remove()
            if value is None
            else getattr(ReprocessBatchRecord, name).set(value)
            for name, value in {**changes, "updated_at": datetime.now(UTC)}.items()
        ]
        item.update(actions=actions)

    def close_batch(self, batch: ReprocessBatchRecord) -> None:
        now = datetime.now(UTC)
        batch.update(
            actions=[
                ReprocessBatchRecord.open.remove(),
                ReprocessBatchRecord.finished_at.set(now),
                ReprocessBatchRecord.updated_at.set(now),
            ]
        )

    def open_batches(self) -> list[ReprocessBatchRecord]:
        return list(ReprocessBatchRecord.open_created.query(OPEN))

    def tenant_batches(self, tenant: str) -> list[ReprocessBatchRecord]:
        return list(ReprocessBatchRecord.tenant_created.query(tenant, scan_index_forward=False))
