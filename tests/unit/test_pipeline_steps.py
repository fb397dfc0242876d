"""The pipeline's steps on in-memory adapters (tests/fakes.py): what each does to a study, its
objects and its audit trail, without AWS. The same steps run against moto in tests/integration and
through the whole local cloud in tests/e2e."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest

from tests.fakes import (
    FakeExecutions,
    InMemoryIdentityMaps,
    InMemoryStorage,
    InMemoryStudyStore,
    RecordingQueues,
    exam_adapters,
)
from tests.fixtures.bad_nifti import make_good_nifti
from voxelpipe import tracking
from voxelpipe.identities import IdentityMap
from voxelpipe.keys import UploadKey, derived_key, quarantine_key, work_key
from voxelpipe.limits import Limits
from voxelpipe.messages import FailureInput, StepError, UploadedObject, WorkItem
from voxelpipe.pipeline import manage
from voxelpipe.pipeline.dispatch import dispatch
from voxelpipe.pipeline.failure import mark_failed
from voxelpipe.pipeline.ingest import ingest_upload
from voxelpipe.pipeline.reconcile import PURGE_WINDOW, Reaper
from voxelpipe.pipeline.register import RegistrationRefused, register_study
from voxelpipe.records import StudyRecord
from voxelpipe.status import StudyStatus, TaskStatus
from voxelpipe.study_data import writing_for
from voxelpipe.wiring import Prefix

TENANT = "lab-a"
# A name that carries identifying text, as uploaders' file names do.
PHI_NAME = "PATIENTNAME_MRN0042.nii.gz"


@pytest.fixture
def store() -> InMemoryStudyStore:
    return InMemoryStudyStore()


@pytest.fixture
def storage() -> InMemoryStorage:
    return InMemoryStorage()


def _register(store: InMemoryStudyStore, name: str = PHI_NAME, size: int = 10) -> StudyRecord:
    return register_study(store, TENANT, actor="t", source="t", analyses=["qc"], files=[(name, size)])


def _upload(store: InMemoryStudyStore, storage: InMemoryStorage, content: bytes, name: str = PHI_NAME):
    study = _register(store, name, len(content))
    (entry,) = study.manifest or []
    key = UploadKey(TENANT, study.study_id, entry["object"]).key
    storage.write(key, content)
    return study, UploadedObject(bucket="b", key=key, version="1")


def _everything_written(store: InMemoryStudyStore, storage: InMemoryStorage) -> str:
    """Every key, row and audit field the pipeline wrote, as one text to search."""
    rows = [*store.tasks.values(), *store.audit.values(), *store.objects.values()]
    written = [*storage.objects, *(str(row.attribute_values) for row in rows)]
    studies = [
        {k: v for k, v in s.attribute_values.items() if k != "manifest"} for s in store.studies.values()
    ]
    return "\n".join([*written, *map(str, studies)])


def test_registration_keeps_the_uploaders_file_names_in_the_manifest_only(store: InMemoryStudyStore):
    study = register_study(
        store, TENANT, actor="t", source="t", files=[(PHI_NAME, 10), ("notes.DCM", 5), ("series.zip", 7)]
    )
    assert study.manifest == [
        {"name": PHI_NAME, "object": "00000.nii.gz", "size": 10},
        {"name": "notes.DCM", "object": "00001.dcm", "size": 5},
        {"name": "series.zip", "object": "00002.zip", "size": 7},
    ]
    assert PHI_NAME not in _everything_written(store, InMemoryStorage())


def test_registration_refuses_what_it_cannot_register_before_storing_anything(store: InMemoryStudyStore):
    with pytest.raises(RegistrationRefused) as refused:
        register_study(store, TENANT, actor="t", source="t", analyses=["nope"])
    assert refused.value.field == "analyses"
    with pytest.raises(RegistrationRefused) as refused:
        register_study(
            store, TENANT, actor="t", source="t", files=[("a.nii", 11)], limits=Limits(max_upload_bytes=10)
        )
    assert refused.value.field == "files.0.size"
    with pytest.raises(RegistrationRefused) as refused:
        register_study(store, TENANT, actor="t", source="t", parameters={"volumetrics": {}})
    assert refused.value.field == "parameters"
    assert store.studies == {}


def test_a_valid_upload_is_queued_under_the_servers_name(store: InMemoryStudyStore, storage: InMemoryStorage):
    _, content = make_good_nifti()
    study, upload = _upload(store, storage, content)
    queues = RecordingQueues()
    outcome = ingest_upload(upload, exam_adapters(store, storage, queues))
    assert outcome.status == StudyStatus.QUEUED
    (item,) = queues.sent
    assert (item.study_id, item.attempt, item.input_key) == (study.study_id, 1, upload.key)
    record = store.get_study(study.study_id)
    assert record is not None and record.input is not None and record.input["shape"] == [32, 32, 24]
    assert [row.action for row in store.audit_trail(study.study_id)] == ["registered", "queued"]
    assert PHI_NAME not in _everything_written(store, storage)


def test_a_bad_upload_is_rejected_and_quarantined_under_the_servers_name(
    store: InMemoryStudyStore, storage: InMemoryStorage
):
    study, upload = _upload(store, storage, b"not a scan at all")
    outcome = ingest_upload(upload, exam_adapters(store, storage))
    assert (outcome.status, outcome.reason) == (StudyStatus.REJECTED, "not_an_image")
    assert storage.list_keys("") == [quarantine_key(upload.key)]
    (task,) = store.tasks_of(study.study_id)
    assert task.status == TaskStatus.FAILED  # ended before the study became REJECTED
    assert PHI_NAME not in _everything_written(store, storage)


def test_an_upload_to_a_deleted_study_is_not_kept(store: InMemoryStudyStore, storage: InMemoryStorage):
    _, content = make_good_nifti()
    study, upload = _upload(store, storage, content)
    manage.delete(study, store, storage, FakeExecutions(), InMemoryIdentityMaps(), actor="t", source="t")
    storage.write(upload.key, content)  # arrives late
    outcome = ingest_upload(upload, exam_adapters(store, storage))
    assert outcome.status == StudyStatus.DELETED and storage.objects == {}


def _queued(store: InMemoryStudyStore) -> WorkItem:
    study = tracking.create_study(
        store, "a" * 32, TENANT, analyses=["qc"], priority="normal", status=StudyStatus.QUEUED
    )
    assert study is not None
    return WorkItem(study_id=study.study_id, attempt=1, tenant=TENANT, input_key="uploads/x", analyses=["qc"])


def test_a_work_item_delivered_again_while_its_execution_runs_audits_one_start(store: InMemoryStudyStore):
    item = _queued(store)
    executions = FakeExecutions()
    assert dispatch(item, store, executions) == "started"
    # Step Functions answers a repeated start of a running execution with that execution.
    assert dispatch(item, store, executions) == "duplicate: execution running"
    executions.end(item.study_id, 1)
    tracking.transition(store, item.study_id, 1, StudyStatus.RUNNING)
    assert dispatch(item, store, executions).startswith("skipped")  # the study moved on
    started = [row for row in store.audit_trail(item.study_id) if row.action == "execution_started"]
    assert len(started) == 1


def test_of_concurrent_reprocess_requests_one_opens_the_attempt(
    store: InMemoryStudyStore, storage: InMemoryStorage
):
    study = tracking.create_study(
        store, "b" * 32, TENANT, analyses=["qc"], priority="normal", status=StudyStatus.COMPLETED
    )
    assert study is not None
    store.set_study_fields(study.study_id, {"input_key": "uploads/x"})
    queues, outcomes = RecordingQueues(), []
    barrier = threading.Barrier(6)

    def reprocess() -> None:
        barrier.wait()
        try:
            outcomes.append(manage.reprocess(study, store, storage, queues, actor="t", source="t").attempt)
        except tracking.TransitionRefused:
            outcomes.append("409")

    threads = [threading.Thread(target=reprocess) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes, key=str) == [2, "409", "409", "409", "409", "409"]
    assert [item.attempt for item in queues.sent] == [2]


def test_a_step_still_running_when_its_study_is_deleted_removes_what_it_wrote(
    store: InMemoryStudyStore, storage: InMemoryStorage
):
    _, content = make_good_nifti()
    study, _ = _upload(store, storage, content)
    for status in (StudyStatus.VALIDATING, StudyStatus.VALIDATED, StudyStatus.QUEUED, StudyStatus.RUNNING):
        tracking.transition(store, study.study_id, 1, status)
    executions, identity_maps = FakeExecutions(), InMemoryIdentityMaps()
    identity_maps.save(study.study_id, IdentityMap(uids={"2.25.1": "1.2.3"}, patient={"00100020": {}}))
    with writing_for(store, storage, study.study_id, writes=(Prefix.DERIVED, Prefix.WORK)):
        task = tracking.start_task(store, study.study_id, 1, "analysis:qc")
        manage.delete(study, store, storage, executions, identity_maps, actor="t", source="t")  # the API
        # The step goes on (stopping an execution does not stop a running Lambda) and writes.
        storage.write(derived_key(study.study_id, "qc", "preview_axial.png"), b"png")
        storage.write(work_key(study.study_id, 1, "outputs/qc/result.json"), b"{}")
        tracking.finish_task(store, task)
    assert storage.objects == {} and store.tasks_of(study.study_id) == []
    assert identity_maps.get(study.study_id) is None  # the honest broker's map went with it
    record = store.get_study(study.study_id)
    assert record is not None and record.status == StudyStatus.DELETED
    # The record keeps who it belonged to and what became of it, not what was uploaded.
    assert record.manifest is None and record.input is None and record.subject is None


def test_the_reaper_purges_what_a_writer_left_after_a_delete_until_the_window_ends(
    store: InMemoryStudyStore, storage: InMemoryStorage
):
    _, content = make_good_nifti()
    study, _ = _upload(store, storage, content)
    identity_maps = InMemoryIdentityMaps()
    manage.delete(study, store, storage, FakeExecutions(), identity_maps, actor="t", source="t")
    late = derived_key(study.study_id, "qc", "late.png")
    storage.write(late, b"png")  # a writer that died before it could clean up
    identity_maps.save(study.study_id, IdentityMap(uids={"2.25.1": "1.2.3"}))  # Prepare, late too
    reaper = Reaper(store, storage, FakeExecutions(), RecordingQueues(), identity_maps)
    deleted_at = store.studies[study.study_id].updated_at
    reaper.reap(now=deleted_at + timedelta(minutes=10))
    assert storage.objects == {} and identity_maps.get(study.study_id) is None
    storage.write(late, b"png")
    reaper.reap(now=deleted_at + PURGE_WINDOW + timedelta(minutes=1))  # long after: not looked at
    assert list(storage.objects) == [late]


def test_mark_failed_records_the_error_and_the_step_that_raised(store: InMemoryStudyStore):
    tracking.create_study(
        store, "c" * 32, TENANT, analyses=["qc"], priority="normal", status=StudyStatus.RUNNING
    )
    tracking.start_task(store, "c" * 32, 1, "analysis:qc")
    cause = '{"errorType": "ValueError", "errorMessage": "no brain"}'
    outcome = mark_failed(
        FailureInput(study_id="c" * 32, attempt=1, error=StepError(Error="ValueError", Cause=cause)), store
    )
    assert outcome["marked"] and outcome["step"] == "analysis:qc" and outcome["message"] == "no brain"
    record = store.get_study("c" * 32)
    assert record is not None and record.status == StudyStatus.FAILED and record.error["type"] == "ValueError"
    (task,) = store.tasks_of("c" * 32)
    assert task.status == TaskStatus.FAILED
