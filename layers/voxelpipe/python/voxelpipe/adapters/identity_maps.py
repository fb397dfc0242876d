"""The honest broker's identity maps in DynamoDB (IdentityMapRecord): the IdentityMaps port.

`save` never reads: a first UpdateItem makes sure the item and its `uids` map exist and sets the
modules, then map updates keyed by UID add the entries (ReturnValues NONE: the writer gets nothing
back), so Prepare's role needs no read action on the table. `forget` is one DeleteItem.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pynamodb.exceptions import DoesNotExist
from pynamodb.expressions.update import Action

from voxelpipe.identities import IdentityMap
from voxelpipe.records import IdentityMapRecord

# An UpdateExpression is at most 4 KB: entries go in batches well within it.
_ENTRIES_PER_UPDATE = 100


def _update(study_id: str, actions: list[Action]) -> None:
    # Model.update asks for ALL_NEW, which would hand the whole map back to the writer.
    IdentityMapRecord._get_connection().update_item(study_id, actions=actions, return_values="NONE")


class DynamoIdentityMaps:
    """IdentityMaps on the identity map table (EnvVar.IDENTITY_MAP_TABLE)."""

    def save(self, study_id: str, identities: IdentityMap) -> None:
        record = IdentityMapRecord
        first: list[Action] = [
            record.uids.set(record.uids | {}),
            record.updated_at.set(datetime.now(UTC)),
        ]
        if identities.patient:
            first.append(record.patient.set(identities.patient))
        if identities.study:
            first.append(record.study.set(identities.study))
        _update(study_id, first)
        entries = sorted(identities.uids.items())
        for start in range(0, len(entries), _ENTRIES_PER_UPDATE):
            batch = entries[start : start + _ENTRIES_PER_UPDATE]
            # A raw map's entry by name is a document path (`uids.#name`, whatever the UID's dots);
            # the stubs type it as the entry's value.
            actions = [record.uids[pseudonym].set(original) for pseudonym, original in batch]  # type: ignore[attr-defined]
            _update(study_id, actions)

    def get(self, study_id: str) -> IdentityMap | None:
        try:
            item = IdentityMapRecord.get(study_id, consistent_read=True)
        except DoesNotExist:
            return None
        uids: dict[str, Any] = item.uids.as_dict() if item.uids is not None else {}  # type: ignore[no-untyped-call]
        return IdentityMap(
            uids={str(k): str(v) for k, v in uids.items()},
            patient=dict(item.patient or {}),
            study=dict(item.study or {}),
        )

    def forget(self, study_id: str) -> None:
        IdentityMapRecord(study_id).delete()
