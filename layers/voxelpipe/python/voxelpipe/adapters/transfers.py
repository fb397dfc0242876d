"""`ports.TransferStore` on DynamoDB: the exams whose instances are pending (records.TransferRecord)."""

from __future__ import annotations

from datetime import datetime

from pynamodb.exceptions import DeleteError, DoesNotExist, UpdateError
from pynamodb.expressions.update import Action

from voxelpipe.adapters.dynamodb import refused_by_condition
from voxelpipe.records import TransferRecord


class DynamoTransferStore:
    def note_received(
        self, study_id: str, tenant: str, source: str, *, at: datetime, opened: bool = False
    ) -> None:
        record = TransferRecord(study_id)
        actions: list[Action] = [
            TransferRecord.tenant.set(tenant),
            TransferRecord.source.set(source),
            TransferRecord.last_received_at.set(at),
            TransferRecord.first_received_at.set(TransferRecord.first_received_at | at),
            TransferRecord.open_transfers.add(1 if opened else 0),
        ]
        record.update(actions=actions)

    def note_ended(self, study_id: str, at: datetime) -> None:
        try:
            TransferRecord(study_id).update(
                actions=[TransferRecord.ended_at.set(at), TransferRecord.open_transfers.add(-1)],
                condition=TransferRecord.study_id.exists(),
            )
        except UpdateError as error:
            if not refused_by_condition(error):
                raise

    def get_transfer(self, study_id: str) -> TransferRecord | None:
        try:
            return TransferRecord.get(study_id, consistent_read=True)
        except DoesNotExist:
            return None

    def pending_transfers(self) -> list[TransferRecord]:
        return list(TransferRecord.scan(consistent_read=True))

    def settle(self, transfer: TransferRecord) -> bool:
        try:
            transfer.delete(condition=TransferRecord.last_received_at == transfer.last_received_at)
        except DeleteError as error:
            if refused_by_condition(error):
                return False
            raise
        return True
