"""The batch sweep (pipeline/batches.py) on in-memory adapters: the throttle holds, every study ends
with a state and a reason, clinical work goes first, and a sweep cut short resumes without opening a
study twice or losing one."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tests.fakes import InMemoryBatchStore, InMemoryStorage, InMemoryStudyStore, RecordingQueues
from voxelpipe import tracking
from voxelpipe.batches import BatchQuery, ItemState
from voxelpipe.messages import Priority, WorkItem
from voxelpipe.pipeline import manage
from voxelpipe.pipeline.batches import BatchAdapters, BatchRefused, advance_batches, create_batch
from voxelpipe.status import StudyStatus

TENANT = "lab-a"


def _studies(store: InMemoryStudyStore, n: int, analyses: tuple[str, ...] = ("qc",)) -> list[str]:
    ids = []
    for i in range(n):
        study_id = f"{i:032x}"
        tracking.create_study(store, study_id, TENANT, analyses=list(analyses), priority="normal")
        store.set_study_fields(
            study_id,
            {
                "status": StudyStatus.COMPLETED.value,
                "input_key": f"uploads/{TENANT}/{study_id}/00000.nii.gz",
                "created_at": datetime(2026, 1, 1, tzinfo=UTC) + timedelta(hours=i),
            },
        )
        ids.append(study_id)
    return ids


@pytest.fixture
def adapters() -> BatchAdapters:
    return BatchAdapters(
        batches=InMemoryBatchStore(),
        store=InMemoryStudyStore(),
        storage=InMemoryStorage(),
        queues=RecordingQueues(),
    )


def _batch(adapters: BatchAdapters, max_in_flight: int = 2):
    batch, count = create_batch(
        adapters.store,
        adapters.batches,
        TENANT,
        actor="admin",
        query=BatchQuery(without_analysis="volumetrics"),
        analyses=["qc", "volumetrics"],
        parameters=None,
        max_in_flight=max_in_flight,
    )
    return batch, count


def _states(adapters: BatchAdapters, batch_id: str) -> list[str]:
    return [str(item.state) for item in adapters.batches.items_of(batch_id)]


def _end(adapters: BatchAdapters, study_id: str, status: StudyStatus) -> None:
    study = adapters.store.get_study(study_id)
    assert study is not None
    tracking.transition(adapters.store, study_id, int(study.attempt), StudyStatus.RUNNING)
    changes = {"error": {"type": "Boom", "message": "no"}} if status is StudyStatus.FAILED else None
    tracking.transition(adapters.store, study_id, int(study.attempt), status, changes=changes)


def test_the_sweep_throttles_settles_and_ends_every_study(adapters: BatchAdapters):
    ids = _studies(adapters.store, 5)
    # A study that already runs volumetrics is not selected.
    tracking.create_study(adapters.store, "f" * 32, TENANT, analyses=["volumetrics"], priority="normal")
    batch, count = _batch(adapters)
    assert count == 5

    advance_batches(adapters)
    assert _states(adapters, batch.batch_id) == ["OPENED", "OPENED", "SELECTED", "SELECTED", "SELECTED"]
    sent = adapters.queues.sent  # type: ignore[attr-defined]
    assert [(item.study_id, item.priority, item.analyses) for item in sent] == [
        (ids[0], Priority.LOW, ["qc", "tissue-seg", "volumetrics"]),
        (ids[1], Priority.LOW, ["qc", "tissue-seg", "volumetrics"]),
    ]
    advance_batches(adapters)  # nothing ended: nothing more opens
    assert len(sent) == 2

    _end(adapters, ids[0], StudyStatus.COMPLETED)
    _end(adapters, ids[1], StudyStatus.FAILED)
    adapters.store.set_study_fields(ids[3], {"status": StudyStatus.DELETED.value})
    advance_batches(adapters)
    # The deleted study ends SKIPPED and takes no slot: two open again.
    assert _states(adapters, batch.batch_id) == ["COMPLETED", "FAILED", "OPENED", "SKIPPED", "OPENED"]
    items = {item.study_id: item for item in adapters.batches.items_of(batch.batch_id)}
    assert items[ids[1]].error == {"type": "Boom", "message": "no"}
    assert items[ids[3]].reason == "deleted meanwhile"

    _end(adapters, ids[2], StudyStatus.COMPLETED)
    _end(adapters, ids[4], StudyStatus.COMPLETED)
    advance_batches(adapters)
    assert _states(adapters, batch.batch_id) == ["COMPLETED", "FAILED", "COMPLETED", "SKIPPED", "COMPLETED"]
    done = adapters.batches.get_batch(batch.batch_id)
    assert done is not None and done.open is None and done.finished_at is not None
    assert adapters.batches.open_batches() == []


def test_clinical_work_goes_first(adapters: BatchAdapters):
    _studies(adapters.store, 2)
    batch, _ = _batch(adapters)
    item = WorkItem(study_id="c" * 32, attempt=1, tenant=TENANT, input_key="k", analyses=["qc"])
    adapters.queues.enqueue(item)  # a normal-priority study waits
    advance_batches(adapters)
    assert _states(adapters, batch.batch_id) == ["SELECTED", "SELECTED"]


def test_a_sweep_cut_short_resumes_without_opening_twice_or_losing_a_study(adapters: BatchAdapters):
    ids = _studies(adapters.store, 3)
    batch, _ = _batch(adapters, max_in_flight=3)
    rows = {item.study_id: item for item in adapters.batches.items_of(batch.batch_id)}
    # Died after marking OPENING, before opening: the study is still at attempt 1.
    adapters.batches.set_item(rows[ids[0]], {"state": ItemState.OPENING.value, "attempt": 2})
    # Died after opening, before marking OPENED: the study is at attempt 2.
    adapters.batches.set_item(rows[ids[1]], {"state": ItemState.OPENING.value, "attempt": 2})
    study = adapters.store.get_study(ids[1])
    assert study is not None
    request = manage.ReprocessRequest(analyses=["qc", "volumetrics"], priority=Priority.LOW)
    manage.reprocess(
        study, adapters.store, adapters.storage, adapters.queues, actor="t", source="t", request=request
    )
    # The next sweep settles both (the first back to SELECTED, the second OPENED) and opens the rest.
    advance_batches(adapters)
    assert _states(adapters, batch.batch_id) == ["OPENED", "OPENED", "OPENED"]
    sent = [item.study_id for item in adapters.queues.sent]  # type: ignore[attr-defined]
    assert sorted(sent) == sorted(ids) and len(sent) == 3  # each opened once


def test_a_study_under_way_is_skipped_and_bad_analyses_are_refused(adapters: BatchAdapters):
    ids = _studies(adapters.store, 1)
    batch, _ = _batch(adapters)
    study = adapters.store.get_study(ids[0])
    assert study is not None
    manage.reprocess(study, adapters.store, adapters.storage, adapters.queues, actor="t", source="t")
    adapters.queues.sent.clear()  # type: ignore[attr-defined]  # dispatched: no clinical backlog
    advance_batches(adapters)
    (item,) = adapters.batches.items_of(batch.batch_id)
    assert item.state == ItemState.SKIPPED and "an attempt is under way" in str(item.reason)
    with pytest.raises(BatchRefused) as refused:
        create_batch(
            adapters.store,
            adapters.batches,
            TENANT,
            actor="admin",
            query=BatchQuery(status=StudyStatus.RUNNING),
            analyses=None,
            parameters=None,
            max_in_flight=1,
        )
    assert refused.value.field == "where.status"
