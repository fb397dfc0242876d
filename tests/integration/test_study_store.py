"""The study store's contract, held by both implementations: the DynamoDB one (moto) that runs in
production and the local cloud, and the in-memory fake the steps' unit tests use.

Status rules on top of it (`tracking`): transitions forward only, within the current attempt.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from infra.local.cloud import LocalCloud
from tests.fakes import InMemoryStudyStore, InMemoryTransferStore
from voxelpipe import tracking
from voxelpipe.adapters.study_table import DynamoStudyStore
from voxelpipe.adapters.transfers import DynamoTransferStore
from voxelpipe.messages import FailureInput, StepError
from voxelpipe.pipeline.failure import mark_failed
from voxelpipe.ports import StudyChanged, StudyStore, TransferStore
from voxelpipe.records import ObjectRecord
from voxelpipe.status import StudyStatus, TaskStatus

STUDY = "d" * 32


@pytest.fixture(params=["dynamodb", "in-memory"])
def store(request: pytest.FixtureRequest) -> Iterator[StudyStore]:
    if request.param == "in-memory":
        yield InMemoryStudyStore()
    else:
        cloud: LocalCloud = request.getfixturevalue("cloud")
        assert cloud.bucket
        yield DynamoStudyStore()


def _study(
    store: StudyStore, status: StudyStatus = StudyStatus.AWAITING_UPLOAD, study_id: str = STUDY
) -> None:
    tracking.create_study(store, study_id, "lab", analyses=["qc"], priority="normal", status=status)


def test_transitions_move_forward_and_repeat_but_never_back(store: StudyStore):
    _study(store)
    assert tracking.create_study(store, STUDY, "lab", analyses=["qc"], priority="normal") is None
    for status in (StudyStatus.VALIDATING, StudyStatus.VALIDATED, StudyStatus.QUEUED, StudyStatus.RUNNING):
        moved = tracking.transition(store, STUDY, 1, status)
        assert moved.status == status and moved.tenant == "lab"  # the whole record comes back
    assert tracking.transition(store, STUDY, 1, StudyStatus.RUNNING).previous_status == "RUNNING"  # a retry
    with pytest.raises(tracking.TransitionRefused, match="RUNNING at attempt 1"):
        tracking.transition(store, STUDY, 1, StudyStatus.QUEUED)
    tracking.transition(store, STUDY, 1, StudyStatus.COMPLETED, changes={"results_key": "k"})
    with pytest.raises(tracking.TransitionRefused):
        tracking.transition(store, STUDY, 1, StudyStatus.FAILED)
    record = store.get_study(STUDY)
    assert record is not None and record.status == StudyStatus.COMPLETED and record.results_key == "k"
    assert record.previous_status == StudyStatus.RUNNING


def test_changes_set_and_remove_fields(store: StudyStore):
    _study(store, StudyStatus.RUNNING)
    tracking.transition(
        store, STUDY, 1, StudyStatus.FAILED, changes={"error": {"type": "X"}, "summary": {"a": 1}}
    )
    store.set_study_fields(STUDY, {"summary": None, "input_key": "derived/x/"})
    record = store.get_study(STUDY)
    assert record is not None and record.summary is None and record.input_key == "derived/x/"
    assert record.error == {"type": "X"}
    with pytest.raises(StudyChanged):
        store.set_study_fields("e" * 32, {"input_key": "never"})  # never creates a study
    assert store.get_study("e" * 32) is None


def test_a_stale_attempt_cannot_overwrite_a_newer_outcome(store: StudyStore):
    _study(store, StudyStatus.COMPLETED)
    store.set_study_fields(STUDY, {"input_key": "uploads/lab/x/00000.nii"})
    reopened = tracking.open_attempt(store, STUDY, 1)
    assert (reopened.attempt, reopened.status) == (2, StudyStatus.QUEUED)
    with pytest.raises(tracking.TransitionRefused, match="attempt 2"):
        tracking.transition(store, STUDY, 1, StudyStatus.COMPLETED)
    outcome = mark_failed(
        FailureInput(study_id=STUDY, attempt=1, error=StepError(Error="States.Timeout")), store
    )
    assert outcome["marked"] is False
    record = store.get_study(STUDY)
    assert record is not None and record.status == StudyStatus.QUEUED and record.attempt == 2
    assert record.error is None


def test_of_concurrent_reprocess_calls_exactly_one_opens_the_next_attempt(store: StudyStore):
    _study(store, StudyStatus.COMPLETED)
    store.set_study_fields(STUDY, {"input_key": "uploads/lab/x/00000.nii", "results_key": "r"})
    opened, refused = [], []
    start = threading.Barrier(6)

    def reprocess() -> None:
        start.wait()
        try:
            opened.append(tracking.open_attempt(store, STUDY, 1).attempt)
        except tracking.TransitionRefused:
            refused.append(True)

    threads = [threading.Thread(target=reprocess) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert (opened, len(refused)) == ([2], 5)
    record = store.get_study(STUDY)
    assert record is not None and record.attempt == 2 and record.results_key is None  # outcome cleared


def test_a_study_without_an_input_cannot_be_reprocessed(store: StudyStore):
    _study(store, StudyStatus.FAILED)
    with pytest.raises(tracking.TransitionRefused):
        tracking.open_attempt(store, STUDY, 1)


def test_arrivals_are_counted_atomically(store: StudyStore):
    _study(store)
    threads = [threading.Thread(target=store.count_arrival, args=(STUDY,)) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert store.count_arrival(STUDY) == 9


def test_tasks_record_progress_timings_and_errors(store: StudyStore):
    task = tracking.start_task(store, STUDY, 1, "prepare")
    tracking.set_progress(store, task, 140)
    assert store.tasks_of(STUDY, 1)[0].progress == 100
    tracking.finish_task(store, task, detail={"volume_key": "work/x"})
    other = tracking.start_task(store, STUDY, 2, "prepare")
    tracking.fail_task(store, other, {"type": "ValueError", "message": "bad"})
    first, second = store.tasks_of(STUDY)
    assert (first.attempt, first.status, first.detail) == (1, TaskStatus.SUCCEEDED, {"volume_key": "work/x"})
    assert first.duration_ms is not None and first.finished_at >= first.started_at
    assert (second.attempt, second.status, second.error["type"]) == (2, TaskStatus.FAILED, "ValueError")
    assert [t.attempt for t in store.tasks_of(STUDY, 2)] == [2]
    assert store.forget_tasks(STUDY) == 2 and store.tasks_of(STUDY) == []
    assert store.update_task(task, {"progress": 5}) is False  # a forgotten row is not brought back
    assert store.tasks_of(STUDY) == []


def test_the_audit_trail_is_append_only_ordered_and_once_only_where_asked(store: StudyStore):
    for action in ("registered", "queued", "failed"):
        assert tracking.audit(store, STUDY, action, actor="test", source="here", detail={"n": action})
    started = datetime.now(UTC)
    assert tracking.audit(store, STUDY, "execution_started", actor="t", source="s", once_at=started)
    assert not tracking.audit(store, STUDY, "execution_started", actor="t", source="s", once_at=started)
    actions = [row.action for row in store.audit_trail(STUDY)]
    assert actions == ["registered", "queued", "failed", "execution_started"]


def test_objects_are_recorded_once_and_listed_by_prefix(store: StudyStore):
    assert store.record_object(ObjectRecord(STUDY, "instance#a", source="k1", summary={"n": 1}))
    assert not store.record_object(ObjectRecord(STUDY, "instance#a", source="k2", summary={"n": 2}))
    assert store.record_object(ObjectRecord(STUDY, "file#00000.dcm", source="k1"))
    (instance,) = store.objects_of(STUDY, "instance#")
    assert (instance.source, instance.summary) == ("k1", {"n": 1})
    assert store.forget_objects(STUDY) == 2 and store.objects_of(STUDY, "") == []


def test_a_tenants_studies_page_newest_first_without_deleted_ones(store: StudyStore):
    ids = [f"{n:032x}" for n in range(5)]
    for study_id in ids:
        _study(store, study_id=study_id)
    tracking.transition(store, ids[2], 1, StudyStatus.DELETED)
    tracking.create_study(store, "f" * 32, "other-lab", analyses=["qc"], priority="normal")
    first = store.tenant_studies("lab", status=None, since=None, until=None, limit=2, start_key=None)
    seen = [s.study_id for s in first.items]
    page = first
    while page.next_key is not None:
        page = store.tenant_studies(
            "lab", status=None, since=None, until=None, limit=2, start_key=page.next_key
        )
        seen += [s.study_id for s in page.items]
    assert seen == [ids[4], ids[3], ids[1], ids[0]]
    deleted = store.tenant_studies(
        "lab", status=StudyStatus.DELETED, since=None, until=None, limit=10, start_key=None
    )
    assert [s.study_id for s in deleted.items] == [ids[2]]


def test_studies_in_a_status_by_when_they_were_updated(store: StudyStore):
    for n in range(3):
        _study(store, StudyStatus.QUEUED, study_id=f"{n:032x}")
    now = datetime.now(UTC) + timedelta(seconds=1)
    assert len(store.studies_in_status(StudyStatus.QUEUED, updated_before=now)) == 3
    assert len(store.studies_in_status(StudyStatus.QUEUED, updated_before=now, limit=2)) == 2
    assert store.studies_in_status(StudyStatus.QUEUED, updated_before=now - timedelta(hours=1)) == []
    assert store.studies_in_status(
        StudyStatus.QUEUED, updated_before=now, updated_after=now - timedelta(minutes=1)
    )


@pytest.fixture(params=["dynamodb", "in-memory"])
def transfers(request: pytest.FixtureRequest) -> Iterator[TransferStore]:
    if request.param == "in-memory":
        yield InMemoryTransferStore()
    else:
        cloud: LocalCloud = request.getfixturevalue("cloud")
        assert cloud.bucket
        yield DynamoTransferStore()


def test_a_transfer_is_noted_ended_and_settled_only_when_nothing_arrived_since(transfers: TransferStore):
    start = datetime(2026, 12, 4, 12, tzinfo=UTC)
    transfers.note_ended("t" * 32, start)  # no record: nothing is created
    assert transfers.get_transfer("t" * 32) is None
    transfers.note_received("t" * 32, "lab", "c-store", at=start, opened=True)
    transfers.note_received("t" * 32, "lab", "c-store", at=start + timedelta(seconds=2), opened=True)
    transfers.note_received("t" * 32, "lab", "c-store", at=start + timedelta(seconds=5))
    transfers.note_ended("t" * 32, start + timedelta(seconds=6))
    seen = transfers.get_transfer("t" * 32)
    assert seen is not None and seen.open_transfers == 1  # two opened, one ended
    assert (seen.tenant, seen.source, seen.first_received_at, seen.last_received_at, seen.ended_at) == (
        "lab",
        "c-store",
        start,
        start + timedelta(seconds=5),
        start + timedelta(seconds=6),
    )
    assert [t.study_id for t in transfers.pending_transfers()] == ["t" * 32]
    transfers.note_received("t" * 32, "lab", "c-store", at=start + timedelta(seconds=9))
    assert not transfers.settle(seen)  # an instance arrived after it was read
    assert transfers.settle(transfers.get_transfer("t" * 32))  # type: ignore[arg-type]
    assert transfers.get_transfer("t" * 32) is None and transfers.pending_transfers() == []


def test_received_counts_objects_written_beside_arrived(store: StudyStore):
    _study(store)
    assert [store.count_received(STUDY) for _ in range(2)] == [1, 2]
    assert store.count_arrival(STUDY) == 1
    record = store.get_study(STUDY)
    assert record is not None and (record.received, record.arrived) == (2, 1)
    with pytest.raises(StudyChanged):
        store.count_received("e" * 32)


def test_a_subjects_studies_come_oldest_first_without_deleted_ones_and_its_record_follows(
    store: StudyStore,
):
    from voxelpipe.pipeline.subjects import refresh_subject

    tenant, ref = f"subjects-{uuid.uuid4().hex[:8]}", "S-1"
    subject = {"subject_ref": ref, "age": 70, "sex": "F"}
    ids = [uuid.uuid4().hex for _ in range(4)]
    # Registered in this order; scan dates say otherwise (one unknown: its creation date counts).
    for study_id, scan_date in zip(ids, ["2031-05-01", "2029-01-01", None, "2030-02-02"], strict=True):
        tracking.create_study(
            store, study_id, tenant, analyses=["qc"], priority="normal", subject=subject, scan_date=scan_date
        )
    tracking.create_study(
        store, uuid.uuid4().hex, "other-tenant", analyses=["qc"], priority="normal", subject=subject
    )
    tracking.transition(store, ids[3], 1, StudyStatus.DELETED)
    ordered = [s.study_id for s in store.studies_of_subject(tenant, ref)]
    assert ordered == [ids[2], ids[1], ids[0]]  # the creation date (no scan date), 2029, 2031
    assert store.studies_of_subject(tenant, "nobody") == []

    record = refresh_subject(store, tenant, ref)
    assert record is not None and int(record.studies) == 3
    assert (record.first_scan_date, record.last_scan_date) == ("2029-01-01", "2031-05-01")
    stored = store.get_subject(tenant, ref)
    assert stored is not None and stored.sex == "F" and stored.age == 70
    page = store.tenant_subjects(tenant, limit=10, start_key=None)
    assert [s.subject_ref for s in page.items] == [ref] and page.next_key is None
    fewer = refresh_subject(store, tenant, ref, excluding=ids[0])
    assert fewer is not None and int(fewer.studies) == 2 and fewer.last_scan_date == "2029-01-01"
    store.forget_subject(tenant, ref)
    assert store.get_subject(tenant, ref) is None
