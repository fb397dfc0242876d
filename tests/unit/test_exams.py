"""Exams through ingest, on in-memory adapters: split by series, routed, recorded; network exams
completed by transfer end and quiet period; instances after the end open a new attempt."""

from __future__ import annotations

import io
import zipfile
from datetime import date, timedelta

import pydicom
import pytest

from tests.fakes import (
    InMemoryIdentityMaps,
    InMemoryRuleSets,
    InMemoryStorage,
    InMemoryStudyStore,
    InMemoryTransferStore,
    RecordingQueues,
    exam_adapters,
)
from tests.fixtures.dicom import PHI_MARKER
from tests.fixtures.exams import make_exam
from voxelpipe import tracking
from voxelpipe.keys import UploadKey
from voxelpipe.messages import AnalysisRequest, ExecutionInput, UploadedObject
from voxelpipe.pipeline import transfers as transfer_completion
from voxelpipe.pipeline.attempts import ended_attempts
from voxelpipe.pipeline.ingest import ingest_upload
from voxelpipe.pipeline.lifecycle import ExamAdapters
from voxelpipe.pipeline.prepare import prepare
from voxelpipe.pipeline.receive import InstanceReceiver, TransferSource, exam_study_id
from voxelpipe.pipeline.register import RegistrationRefused, register_study
from voxelpipe.pseudonyms import Pseudonyms
from voxelpipe.routing import DEFAULT_RULE_SET, RuleSet
from voxelpipe.status import StudyStatus
from voxelpipe.wiring import Prefix, Runtime

TENANT = "clinic"
PSEUDONYMS = Pseudonyms(b"unit-test-pseudonym-secret")


class NotifyingStorage(InMemoryStorage):
    """Storage whose writes under uploads/ run ingest, as S3's notifications do (after the write)."""

    exam: ExamAdapters | None = None

    def _notify(self, key: str) -> None:
        if self.exam is not None and key.startswith(Prefix.UPLOADS):
            ingest_upload(UploadedObject(bucket="b", key=key, version="1"), self.exam)

    def write(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        super().write(key, data, content_type)
        self._notify(key)

    def copy(self, key: str, destination: str) -> None:
        super().copy(key, destination)
        self._notify(destination)


@pytest.fixture
def store() -> InMemoryStudyStore:
    return InMemoryStudyStore()


@pytest.fixture
def storage() -> NotifyingStorage:
    return NotifyingStorage()


def _adapters(
    store: InMemoryStudyStore, storage: NotifyingStorage, rule_set: RuleSet | None = None
) -> ExamAdapters:
    exam = exam_adapters(
        store,
        storage,
        RecordingQueues(),
        transfers=InMemoryTransferStore(),
        rule_sets=InMemoryRuleSets({TENANT: rule_set} if rule_set else {}),
    )
    storage.exam = exam
    return exam


def _upload_exam(exam: ExamAdapters, storage: NotifyingStorage, objects: list[bytes]) -> str:
    """An exam as POST /studies registers it: a zip of every object, declared."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for number, data in enumerate(objects):
            archive.writestr(f"{PHI_MARKER}/{number:04d}.dcm", data)
    content = buffer.getvalue()
    study = register_study(
        exam.store,
        TENANT,
        actor="t",
        source="t",
        analyses=["qc"],
        input_format="dicom",
        files=[("exam.zip", len(content))],
    )
    assert study.manifest is not None
    storage.write(UploadKey(TENANT, study.study_id, study.manifest[0]["object"]).key, content)
    return study.study_id


def _by_class(store: InMemoryStudyStore, study_id: str) -> dict[str, dict]:
    study = store.get_study(study_id)
    assert study is not None and study.dicom is not None
    return {entry["series_class"]: entry for entry in study.dicom["series"]}


def test_an_uploaded_exam_processes_its_3d_t1_and_records_why_not_the_others(
    store: InMemoryStudyStore, storage: NotifyingStorage
):
    exam = _adapters(store, storage)
    made = make_exam()
    study_id = _upload_exam(exam, storage, made.instances)

    study = store.get_study(study_id)
    assert study is not None and study.status == StudyStatus.QUEUED, study.reason_detail
    series = _by_class(store, study_id)
    assert set(series) == {"T1", "LOCALIZER", "FLAIR"}
    t1 = series["T1"]
    assert t1["decision"]["selected"] and t1["decision"]["rule"] == "3d-t1"
    assert t1["study_id"] == study_id and study.series_uid == t1["series_instance_uid"]
    assert t1["instances"] == len(made.t1.instances)
    assert series["LOCALIZER"]["decision"]["action"] == "discard"
    assert series["LOCALIZER"]["decision"]["rule"] == "localizers-and-derived"
    assert series["FLAIR"]["decision"]["action"] == "none" and series["FLAIR"]["study_id"] is None
    assert all(entry["decision"]["explanation"] for entry in series.values())
    # The study checks and queues only its own series; nothing identifying is kept with it.
    assert study.input is not None and study.input["instances"] == len(made.t1.instances)
    assert [item.study_id for item in exam.queues.sent] == [study_id]  # type: ignore[attr-defined]
    assert PHI_MARKER not in repr(study.dicom)
    assert made.study_uid not in repr(study.dicom)
    assert [row.action for row in store.audit_trail(study_id)][-2:] == ["routed", "queued"]


def test_a_further_selected_series_gets_a_routed_study_of_its_own(
    store: InMemoryStudyStore, storage: NotifyingStorage
):
    rules = RuleSet.model_validate(
        {
            "rules": [
                {
                    "name": "t1",
                    "condition": {"field": "SeriesClass", "equals": "T1"},
                    "action": {"kind": "process"},
                },
                {
                    "name": "flair",
                    "condition": {"field": "SeriesClass", "equals": "FLAIR"},
                    "action": {"kind": "process", "analyses": ["qc"], "priority": "high"},
                },
            ]
        }
    )
    exam = _adapters(store, storage, rules)
    made = make_exam()
    study_id = _upload_exam(exam, storage, made.instances)

    flair = _by_class(store, study_id)["FLAIR"]
    routed_id = flair["study_id"]
    assert routed_id not in (None, study_id)
    routed = store.get_study(routed_id)
    assert routed is not None and routed.status == StudyStatus.QUEUED, routed.reason_detail
    assert (routed.exam_id, routed.source, routed.priority) == (study_id, "routed", "high")
    assert routed.series_uid == flair["series_instance_uid"]
    assert routed.input is not None and routed.input["instances"] == len(made.flair.instances)
    # The exam and the routed study share one map of UIDs: the same series, the same pseudonym.
    exam_study = store.get_study(study_id)
    assert exam_study is not None and exam_study.status == StudyStatus.QUEUED
    assert sorted(item.study_id for item in exam.queues.sent) == sorted([study_id, routed_id])  # type: ignore[attr-defined]


def test_an_exam_whose_rules_select_nothing_is_rejected_with_each_series_reason(
    store: InMemoryStudyStore, storage: NotifyingStorage
):
    exam = _adapters(store, storage)
    made = make_exam()
    study_id = _upload_exam(exam, storage, [*made.localizer.instances, *made.flair.instances])
    study = store.get_study(study_id)
    assert study is not None and study.status == StudyStatus.REJECTED
    assert study.reason == "no_series_selected"
    assert "discarded by rule localizers-and-derived" in (study.reason_detail or "")
    assert "no rule matched" in (study.reason_detail or "")


def test_one_uploaded_series_is_processed_as_it_always_was(
    store: InMemoryStudyStore, storage: NotifyingStorage
):
    exam = _adapters(store, storage)
    made = make_exam()
    study_id = _upload_exam(exam, storage, made.flair.instances)
    study = store.get_study(study_id)
    assert study is not None and study.status == StudyStatus.QUEUED
    assert _by_class(store, study_id)["FLAIR"]["decision"]["rule"] == "only-series"
    assert study.analyses == ["qc"]  # the study's own request: the rule names none


def _in_order(instances: list[bytes]) -> list[bytes]:
    """By Instance Number: the last one is an end slice (without it the stack has no gap)."""
    return sorted(
        instances,
        key=lambda data: int(pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True).InstanceNumber),
    )


def _quiet(seconds: int) -> RuleSet:
    return DEFAULT_RULE_SET.model_copy(update={"quiet_period_seconds": seconds})


def _later(monkeypatch: pytest.MonkeyPatch, seconds: float) -> None:
    now = tracking.now() + timedelta(seconds=seconds)
    monkeypatch.setattr(tracking, "now", lambda: now)


def test_a_network_exam_completes_only_after_its_transfer_ended_and_the_quiet_period(
    store: InMemoryStudyStore, storage: NotifyingStorage, monkeypatch: pytest.MonkeyPatch
):
    exam = _adapters(store, storage, _quiet(30))
    receiver = InstanceReceiver(store, storage, exam.transfers, exam.limits, pseudonyms=PSEUDONYMS)
    made = make_exam()
    study_id = exam_study_id(PSEUDONYMS, TENANT, made.study_uid)

    first = receiver.open_transfer(TENANT, TransferSource.C_STORE, actor="AE MRI1")
    for data in made.t1.instances:
        assert first.receive(data).study_id == study_id
    first.end()
    _later(monkeypatch, 10)  # ended, but not quiet for 30 s yet
    assert transfer_completion.complete_transfers(exam) == []
    # A second association brings the FLAIR, and does not end: a minute later, still waiting.
    second = receiver.open_transfer(TENANT, TransferSource.C_STORE)
    for data in made.flair.instances:
        second.receive(data)
    _later(monkeypatch, 60)
    assert transfer_completion.complete_transfers(exam) == []
    assert store.get_study(study_id).status == StudyStatus.AWAITING_UPLOAD  # type: ignore[union-attr]

    second.end()  # quiet for a minute already: complete
    (outcome,) = transfer_completion.complete_transfers(exam)
    assert outcome.study_id == study_id and outcome.status == StudyStatus.QUEUED
    study = store.get_study(study_id)
    assert study is not None and study.source == "c-store"
    assert set(_by_class(store, study_id)) == {"T1", "FLAIR"}  # both associations' series
    assert exam.transfers.pending_transfers() == []
    received = [(r.actor, r.detail) for r in store.audit_trail(study_id) if r.action == "instances_received"]
    assert received == [("AE MRI1", {"instances": len(made.t1.instances)}), ("c-store", {"instances": 4})]
    # Every object's name is a pseudonymous UID: no original identifier in a key.
    assert not any(made.study_uid in key or PHI_MARKER in key for key in storage.objects)


def test_an_instance_after_the_exam_ended_opens_a_new_attempt(
    store: InMemoryStudyStore, storage: NotifyingStorage, monkeypatch: pytest.MonkeyPatch
):
    exam = _adapters(store, storage, _quiet(0))
    receiver = InstanceReceiver(store, storage, exam.transfers, exam.limits, pseudonyms=PSEUDONYMS)
    made = make_exam()
    *early, late = _in_order(made.t1.instances)
    with receiver.open_transfer(TENANT, TransferSource.STOW) as transfer:
        for data in early:
            study_id = transfer.receive(data).study_id
    _later(monkeypatch, 1)
    transfer_completion.complete_transfers(exam)
    study = store.get_study(study_id)
    assert study is not None and (study.status, study.attempt) == (StudyStatus.QUEUED, 1)
    # It ends (COMPLETED stands in for the run); then the last slice arrives.
    for target in (StudyStatus.RUNNING, StudyStatus.COMPLETED):
        tracking.transition(store, study_id, 1, target)
    with receiver.open_transfer(TENANT, TransferSource.STOW) as transfer:
        assert transfer.receive(late).new
    _later(monkeypatch, 2)
    (_outcome,) = transfer_completion.complete_transfers(exam)
    study = store.get_study(study_id)
    assert study is not None and (study.status, study.attempt) == (StudyStatus.QUEUED, 2)
    assert study.input is not None and study.input["instances"] == len(made.t1.instances)
    actions = [row.action for row in store.audit_trail(study_id)]
    assert "instances_after_end" in actions


def test_instances_that_arrive_while_an_attempt_runs_wait_for_it(
    store: InMemoryStudyStore, storage: NotifyingStorage, monkeypatch: pytest.MonkeyPatch
):
    exam = _adapters(store, storage, _quiet(0))
    receiver = InstanceReceiver(store, storage, exam.transfers, exam.limits, pseudonyms=PSEUDONYMS)
    made = make_exam()
    *early, late = _in_order(made.t1.instances)
    with receiver.open_transfer(TENANT, TransferSource.C_STORE) as transfer:
        for data in early:
            study_id = transfer.receive(data).study_id
    _later(monkeypatch, 1)
    transfer_completion.complete_transfers(exam)
    tracking.transition(store, study_id, 1, StudyStatus.RUNNING)
    with receiver.open_transfer(TENANT, TransferSource.C_STORE) as transfer:
        transfer.receive(late)
    _later(monkeypatch, 2)
    assert transfer_completion.complete_transfers(exam) == []  # attempt 1 still runs
    assert len(exam.transfers.pending_transfers()) == 1  # and the instance is not forgotten
    tracking.transition(store, study_id, 1, StudyStatus.COMPLETED)
    (outcome,) = transfer_completion.complete_transfers(exam)
    assert outcome.status == StudyStatus.QUEUED
    assert store.get_study(study_id).attempt == 2  # type: ignore[union-attr]
    # Attempt 1's record was kept before attempt 2 opened (its outputs move when Prepare starts).
    assert [(a["attempt"], a["status"]) for a in ended_attempts(store, study_id)] == [(1, "COMPLETED")]


def test_a_deleted_exam_is_never_reused_by_a_later_transfer(
    store: InMemoryStudyStore, storage: NotifyingStorage
):
    exam = _adapters(store, storage, _quiet(0))
    receiver = InstanceReceiver(store, storage, exam.transfers, exam.limits, pseudonyms=PSEUDONYMS)
    made = make_exam()
    with receiver.open_transfer(TENANT, TransferSource.C_STORE) as transfer:
        first = transfer.receive(made.t1.instances[0]).study_id
    tracking.transition(store, first, 1, StudyStatus.DELETED)
    with receiver.open_transfer(TENANT, TransferSource.C_STORE) as transfer:
        second = transfer.receive(made.t1.instances[1]).study_id
    assert second != first and store.get_study(second).status == StudyStatus.AWAITING_UPLOAD  # type: ignore[union-attr]


def test_the_receiver_refuses_what_is_not_an_image_object(
    store: InMemoryStudyStore, storage: NotifyingStorage
):
    from voxelpipe.rejections import Rejected

    exam = _adapters(store, storage)
    receiver = InstanceReceiver(store, storage, exam.transfers, exam.limits, pseudonyms=PSEUDONYMS)
    with receiver.open_transfer(TENANT, TransferSource.STOW) as transfer, pytest.raises(Rejected) as refused:
        transfer.receive(b"not dicom at all" * 20)
    assert refused.value.reason == "not_dicom"
    assert storage.objects == {} and store.studies == {}


def test_an_open_association_holds_the_exam_however_long_it_is_idle(
    store: InMemoryStudyStore, storage: NotifyingStorage, monkeypatch: pytest.MonkeyPatch
):
    exam = _adapters(store, storage, _quiet(5))
    receiver = InstanceReceiver(store, storage, exam.transfers, exam.limits, pseudonyms=PSEUDONYMS)
    made = make_exam()
    idle = receiver.open_transfer(TENANT, TransferSource.C_STORE)
    idle.receive(made.flair.instances[0])  # then it sends nothing more, but stays open
    with receiver.open_transfer(TENANT, TransferSource.C_STORE) as busy:
        for data in made.t1.instances:
            busy.receive(data)
    _later(monkeypatch, 120)
    assert transfer_completion.complete_transfers(exam) == []
    for data in made.flair.instances[1:]:
        idle.receive(data)
    idle.end()
    _later(monkeypatch, 130)
    (outcome,) = transfer_completion.complete_transfers(exam)
    assert outcome.status == StudyStatus.QUEUED
    assert _by_class(store, outcome.study_id)["FLAIR"]["instances"] == len(made.flair.instances)


def _execution(study_id: str, attempt: int, input_key: str) -> ExecutionInput:
    qc = AnalysisRequest(name="qc", version="1", runtime=Runtime.LAMBDA)
    return ExecutionInput(
        study_id=study_id, attempt=attempt, tenant=TENANT, input_key=input_key, analyses=[qc], stages=[[qc]]
    )


def test_prepare_converts_the_studys_series_only_and_reads_back_only_its_copies(
    store: InMemoryStudyStore, storage: NotifyingStorage
):
    exam = _adapters(store, storage)
    made = make_exam(t1_slices=6)
    study_id = _upload_exam(exam, storage, made.instances)
    study = store.get_study(study_id)
    assert study is not None and study.input_key is not None
    identity_maps = InMemoryIdentityMaps()
    first = prepare(_execution(study_id, 1, study.input_key), store, storage, identity_maps, PSEUDONYMS)
    assert first.original_shape[-1] == 6  # the T1's 6 slices: not the localizer's, not the FLAIR's
    assert storage.list_keys(UploadKey(TENANT, study_id, "").key) == []  # every original disposed of
    copies = storage.list_keys(f"derived/{study_id}/dicom/")
    assert len(copies) == 6 and all(PHI_MARKER.encode() not in storage.read(key) for key in copies)
    # Outputs written beside the copies (another series with pixels, an object without) are not
    # read back as the series' instances by the next attempt.
    storage.objects[f"derived/{study_id}/dicom/output-seg.dcm"] = (
        made.flair.instances[0],
        "application/dicom",
    )
    storage.objects[f"derived/{study_id}/dicom/output-sr.dcm"] = (b"\0" * 128 + b"DICM" + b"\0" * 64, "")
    tracking.transition(store, study_id, 1, StudyStatus.COMPLETED)
    reopened = tracking.open_attempt(store, study_id, 1)
    assert reopened.input_key is not None
    second = prepare(_execution(study_id, 2, reopened.input_key), store, storage, identity_maps, PSEUDONYMS)
    assert second.original_shape == first.original_shape


def test_prepare_files_an_undeclared_exam_under_the_patients_subject_with_its_dates_shifted(
    store: InMemoryStudyStore, storage: NotifyingStorage
):
    exam = _adapters(store, storage)
    made = make_exam(t1_slices=4)
    original = pydicom.dcmread(io.BytesIO(made.t1.instances[0]))
    study_id = _upload_exam(exam, storage, made.instances)
    study = store.get_study(study_id)
    assert study is not None and study.input_key is not None and study.subject is None
    prepare(_execution(study_id, 1, study.input_key), store, storage, InMemoryIdentityMaps(), PSEUDONYMS)

    ref = PSEUDONYMS.subject_ref_for_patient(TENANT, original.PatientID, original.get("IssuerOfPatientID"))
    real = date.fromisoformat(f"{original.StudyDate[:4]}-{original.StudyDate[4:6]}-{original.StudyDate[6:]}")
    shifted = PSEUDONYMS.shift_date(real, TENANT, ref)
    study = store.get_study(study_id)
    assert study is not None
    # Age and sex from the originals (nothing declared), never the birth date.
    assert study.subject == {"subject_ref": ref, "age": 55.0, "sex": "F"}
    assert study.subject_key == f"{TENANT}#{ref}" and study.scan_date == shifted.isoformat()
    for key in storage.list_keys(f"derived/{study_id}/dicom/"):
        data = storage.read(key)
        copy = pydicom.dcmread(io.BytesIO(data))
        assert copy.PatientID == ref and str(copy.PatientName) == ref
        assert copy.StudyDate == shifted.strftime("%Y%m%d")
        assert copy.LongitudinalTemporalInformationModified == "MODIFIED"
        assert original.StudyDate.encode() not in data and original.PatientBirthDate.encode() not in data
    subject = store.get_subject(TENANT, ref)
    assert subject is not None and int(subject.studies) == 1
    assert subject.first_scan_date == subject.last_scan_date == shifted.isoformat()
    assert [s.study_id for s in store.studies_of_subject(TENANT, ref)] == [study_id]


def test_a_declared_subject_and_age_win_over_the_originals(
    store: InMemoryStudyStore, storage: NotifyingStorage
):
    exam = _adapters(store, storage)
    made = make_exam(t1_slices=4)
    study_id = _upload_exam(exam, storage, made.instances)
    store.set_study_fields(study_id, {"subject": {"subject_ref": "P-7", "age": 60.5, "sex": None}})
    study = store.get_study(study_id)
    assert study is not None and study.input_key is not None
    prepare(_execution(study_id, 1, study.input_key), store, storage, InMemoryIdentityMaps(), PSEUDONYMS)
    study = store.get_study(study_id)
    assert study is not None and study.subject == {"subject_ref": "P-7", "age": 60.5, "sex": "F"}
    (key, *_) = storage.list_keys(f"derived/{study_id}/dicom/")
    assert pydicom.dcmread(io.BytesIO(storage.read(key))).PatientID == "P-7"


def test_a_registered_scan_date_is_shifted_and_needs_a_subject(store: InMemoryStudyStore):
    with pytest.raises(RegistrationRefused) as refused:
        register_study(
            store, TENANT, actor="t", source="t", scan_date=date(2024, 1, 5), pseudonyms=PSEUDONYMS
        )
    assert refused.value.field == "scan_date"
    studies = [
        register_study(
            store,
            TENANT,
            actor="t",
            source="t",
            subject={"subject_ref": "S-1", "age": 70, "sex": "M"},
            scan_date=real,
            pseudonyms=PSEUDONYMS,
        )
        for real in (date(2024, 1, 5), date(2022, 7, 1))
    ]
    shifted = [date.fromisoformat(s.scan_date or "") for s in studies]
    assert shifted[0] - shifted[1] == date(2024, 1, 5) - date(2022, 7, 1)
    assert "2024-01-05" not in {s.scan_date for s in studies}
    # Oldest first by the (shifted) scan date, whatever the order of registration.
    assert [s.study_id for s in store.studies_of_subject(TENANT, "S-1")] == [
        studies[1].study_id,
        studies[0].study_id,
    ]
    subject = store.get_subject(TENANT, "S-1")
    assert subject is not None and int(subject.studies) == 2
    assert (subject.first_scan_date, subject.last_scan_date) == (studies[1].scan_date, studies[0].scan_date)


def test_a_study_deleted_while_prepare_runs_gives_its_subject_nothing(store: InMemoryStudyStore):
    from voxelpipe.pipeline.subjects import give_subject

    study = register_study(store, TENANT, actor="t", source="t")
    tracking.transition(store, study.study_id, 1, StudyStatus.DELETED)
    give_subject(store, study, {"subject_ref": "S-9", "age": None, "sex": None}, "2020-01-01")
    stored = store.get_study(study.study_id)
    assert stored is not None and (stored.subject, stored.subject_key, stored.scan_date) == (None, None, None)
    assert store.get_subject(TENANT, "S-9") is None
