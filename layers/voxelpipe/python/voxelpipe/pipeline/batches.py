"""Bulk reprocess: an admin's query selects studies of the tenant (POST /reprocess-batches), and a
scheduled sweep reprocesses them at low priority, a few at a time, until every one has ended —
reprocessed, failed with its error, or skipped or rejected with a reason. Nothing is lost: each
study's row says where it is, and a sweep that dies midway is resumed by the next.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from voxelpipe import tracking
from voxelpipe.batches import (
    BATCH_ROW,
    ELIGIBLE,
    ENDED,
    MAX_BATCH_STUDIES,
    OPEN,
    STUDY_ROW_PREFIX,
    BatchQuery,
    ItemState,
    how_many_to_open,
    matches,
    outcome,
)
from voxelpipe.messages import Priority
from voxelpipe.observability import logger
from voxelpipe.pipeline import manage
from voxelpipe.pipeline.attempts import ended_attempts
from voxelpipe.pipeline.register import RegistrationRefused, check_analyses_requested
from voxelpipe.ports import BatchStore, ObjectStorage, StudyStore, WorkQueues
from voxelpipe.records import ReprocessBatchRecord
from voxelpipe.status import StudyStatus

ACTOR = "reprocess-batches"
_PAGE = 200


class BatchRefused(ValueError):
    """The batch cannot be created as asked; `field` names the part of the request at fault."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def create_batch(
    store: StudyStore,
    batches: BatchStore,
    tenant: str,
    *,
    actor: str,
    query: BatchQuery,
    analyses: list[str] | None,
    parameters: dict[str, dict[str, Any]] | None,
    max_in_flight: int,
) -> tuple[ReprocessBatchRecord, int]:
    """Select the tenant's studies the query matches and store the batch (its studies SELECTED);
    the batch and how many it selected. BatchRefused (or RegistrationRefused, for analyses and
    parameters registration would refuse) before anything is stored."""
    if query.status not in ELIGIBLE:
        raise BatchRefused("where.status", f"only ended studies can be reprocessed ({', '.join(ELIGIBLE)})")
    if analyses is not None:
        check_analyses_requested(tenant, analyses, parameters)
    elif parameters:
        raise BatchRefused("parameters", "parameters need the analyses they are for")
    selected: list[str] = []
    start_key: dict[str, Any] | None = None
    while True:
        page = store.tenant_studies(
            tenant,
            status=query.status,
            since=query.created_from,
            until=query.created_to,
            limit=_PAGE,
            start_key=start_key,
        )
        selected += [study.study_id for study in page.items if matches(study, query)]
        if len(selected) > MAX_BATCH_STUDIES:
            raise BatchRefused(
                "where", f"over {MAX_BATCH_STUDIES} studies match: narrow it (created_from, created_to)"
            )
        start_key = page.next_key
        if start_key is None:
            break
    now = tracking.now()
    batch_id = uuid.uuid4().hex
    batch = ReprocessBatchRecord(
        batch_id,
        BATCH_ROW,
        created_at=now,
        updated_at=now,
        tenant=tenant,
        open=OPEN if selected else None,
        actor=actor,
        where=query.model_dump(mode="json", exclude_none=True),
        analyses=analyses,
        parameters=parameters,
        max_in_flight=max_in_flight,
        selected=len(selected),
        finished_at=None if selected else now,
    )
    items = [
        ReprocessBatchRecord(
            batch_id,
            f"{STUDY_ROW_PREFIX}{study_id}",
            created_at=now,
            updated_at=now,
            study_id=study_id,
            state=ItemState.SELECTED.value,
        )
        for study_id in reversed(selected)  # oldest first
    ]
    batches.create_batch(batch, items)
    return batch, len(selected)


@dataclass(frozen=True)
class BatchAdapters:
    """What the sweep needs: the batches, the studies, their objects, and the work queues."""

    batches: BatchStore
    store: StudyStore
    storage: ObjectStorage
    queues: WorkQueues


def _attempt_status(adapters: BatchAdapters, study_id: str, attempt: int) -> str | None:
    """The status of one attempt of a study: the study's own while it is that attempt, else the
    record kept when the next one opened; DELETED for a study that is gone."""
    study = adapters.store.get_study(study_id)
    if study is None or study.status == StudyStatus.DELETED:
        return StudyStatus.DELETED.value
    if int(study.attempt) == attempt:
        return study.status
    if int(study.attempt) < attempt:
        return None
    # Every opener keeps the ended attempt's record first (manage.reprocess, a late DICOM instance);
    # none means the attempt ended before attempts were kept, and a next one could open: it ended.
    kept = {int(record["attempt"]): record for record in ended_attempts(adapters.store, study_id)}
    return str(kept[attempt]["status"]) if attempt in kept else StudyStatus.COMPLETED.value


def _settle(adapters: BatchAdapters, item: ReprocessBatchRecord) -> None:
    """An item in flight: note what its attempt came to, if it has ended. An item OPENING when a
    sweep died is OPENED if its attempt was opened, else back to SELECTED."""
    assert item.study_id is not None and item.attempt is not None
    attempt = int(item.attempt)
    if item.state == ItemState.OPENING:
        study = adapters.store.get_study(item.study_id)
        if study is not None and int(study.attempt) < attempt and study.status != StudyStatus.DELETED:
            adapters.batches.set_item(item, {"state": ItemState.SELECTED.value, "attempt": None})
            return
        adapters.batches.set_item(item, {"state": ItemState.OPENED.value})
    status = _attempt_status(adapters, item.study_id, attempt)
    state = outcome(status) if status is not None else None
    if state is None:
        return
    changes: dict[str, Any] = {"state": state.value}
    if state is ItemState.SKIPPED:
        changes["reason"] = "deleted meanwhile"
    elif state is ItemState.FAILED:
        study = adapters.store.get_study(item.study_id)
        kept = {int(r["attempt"]): r for r in ended_attempts(adapters.store, item.study_id)}
        record = kept.get(attempt) or {}
        error = (study.error if study and int(study.attempt) == attempt else record.get("error")) or {}
        reason = study.reason if study and int(study.attempt) == attempt else record.get("reason")
        changes["error"] = error or {"type": "Rejected", "message": reason or "rejected"}
    adapters.batches.set_item(item, changes)


def _open(adapters: BatchAdapters, batch: ReprocessBatchRecord, item: ReprocessBatchRecord) -> bool:
    """Open the next attempt of one selected study, at low priority, with the batch's analyses;
    False when it ended instead (skipped, rejected), taking no place in flight."""
    assert item.study_id is not None
    study = adapters.store.get_study(item.study_id)
    if study is None or study.status == StudyStatus.DELETED:
        adapters.batches.set_item(item, {"state": ItemState.SKIPPED.value, "reason": "deleted meanwhile"})
        return False
    if StudyStatus(study.status) not in ELIGIBLE:
        adapters.batches.set_item(
            item,
            {
                "state": ItemState.SKIPPED.value,
                "reason": f"{study.status} at attempt {study.attempt}: an attempt is under way",
            },
        )
        return False
    # OPENING with the attempt it opens, before opening it: a sweep that dies in between leaves a
    # row the next one settles by the study's attempt (never opens twice, never loses the study).
    adapters.batches.set_item(item, {"state": ItemState.OPENING.value, "attempt": int(study.attempt) + 1})
    try:
        reopened = manage.reprocess(
            study,
            adapters.store,
            adapters.storage,
            adapters.queues,
            actor=ACTOR,
            source=f"batch:{batch.batch_id}",
            request=manage.ReprocessRequest(
                analyses=batch.analyses, parameters=batch.parameters, priority=Priority.LOW
            ),
            audit_detail={"batch": batch.batch_id, "by": batch.actor},
        )
    except RegistrationRefused as refused:
        adapters.batches.set_item(
            item,
            {"state": ItemState.REJECTED.value, "reason": f"{refused.field}: {refused}", "attempt": None},
        )
        return False
    except tracking.TransitionRefused as refused:
        current = refused.current
        reason = "deleted meanwhile" if refused.deleted else f"{current.status if current else 'missing'}: "
        adapters.batches.set_item(
            item,
            {
                "state": ItemState.SKIPPED.value,
                "reason": reason if refused.deleted else reason + "an attempt is under way",
                "attempt": None,
            },
        )
        return False
    adapters.batches.set_item(item, {"state": ItemState.OPENED.value, "attempt": int(reopened.attempt)})
    return True


def advance_batch(
    adapters: BatchAdapters, batch: ReprocessBatchRecord, clinical_backlog: int
) -> dict[str, int]:
    """One step of one batch: settle the studies in flight, open as many more as the throttle
    allows, close the batch once every study ended. Counts of what it did."""
    items = adapters.batches.items_of(batch.batch_id)
    in_flight = [item for item in items if item.state in (ItemState.OPENING, ItemState.OPENED)]
    for item in in_flight:
        _settle(adapters, item)
    items = adapters.batches.items_of(batch.batch_id)
    still = sum(1 for item in items if item.state in (ItemState.OPENING, ItemState.OPENED))
    waiting = [item for item in items if item.state == ItemState.SELECTED]
    slots = how_many_to_open(still, len(waiting), int(batch.max_in_flight or 1), clinical_backlog)
    opened = 0
    for item in waiting:  # a study that ends instead of opening (skipped, rejected) takes no slot
        if opened >= slots:
            break
        opened += _open(adapters, batch, item)
    items = adapters.batches.items_of(batch.batch_id)
    if all(item.state in ENDED for item in items):
        adapters.batches.close_batch(batch)
    return {"settled": len(in_flight), "opened": opened}


def advance_batches(adapters: BatchAdapters) -> list[dict[str, Any]]:
    """The scheduled sweep: advance every open batch, oldest first. Clinical work (the high and
    normal queues' backlog) holds every batch's openings back; a batch that fails is logged and
    left for the next sweep."""
    clinical = adapters.queues.backlog(Priority.HIGH) + adapters.queues.backlog(Priority.NORMAL)
    done = []
    for batch in adapters.batches.open_batches():
        try:
            done.append({"batch_id": batch.batch_id, **advance_batch(adapters, batch, clinical)})
        except Exception:  # one batch's trouble never stops the others; the next sweep resumes it
            logger.exception("batch not advanced", extra={"batch_id": batch.batch_id})
    return done
