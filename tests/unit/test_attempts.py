"""Attempts kept (pipeline/attempts.py): attempt n's outputs move under derived/{id}/attempts/{n}/,
the inputs stay, results.json follows its objects; repeating or resuming the move changes nothing."""

from __future__ import annotations

import json

import pytest

from tests.fakes import InMemoryStorage, InMemoryStudyStore
from voxelpipe import tracking
from voxelpipe.pipeline.attempts import archive_attempt, ended_attempts, record_ended_attempt
from voxelpipe.status import StudyStatus

STUDY = "a" * 32
TOP = f"derived/{STUDY}/"
COPY, SEG = TOP + "dicom/2.25.1.dcm", TOP + "dicom/2.25.9.dcm"


def _attempt_one(storage: InMemoryStorage) -> None:
    results = {
        "attempt": 1,
        "input": {"key": f"uploads/t/{STUDY}/00000.dcm"},
        "analyses": {"qc": {"artifacts": [TOP + "qc/preview_axial.png"]}},
        "report": {"html": {"status": "available", "key": TOP + "report.html"}},
        "dicom_outputs": [{"key": SEG, "kind": "SEG", "status": "available"}],
    }
    for key in (TOP + "qc/preview_axial.png", TOP + "report.html", TOP + "input/volume.nii.gz", COPY, SEG):
        storage.write(key, key.encode())
    storage.write(TOP + "results.json", json.dumps(results).encode())


def test_outputs_move_inputs_stay_and_results_follow():
    storage = InMemoryStorage()
    _attempt_one(storage)
    assert archive_attempt(storage, STUDY, 1) == 4
    assert storage.list_keys(TOP) == sorted(
        [
            TOP + "attempts/1/dicom/2.25.9.dcm",
            TOP + "attempts/1/qc/preview_axial.png",
            TOP + "attempts/1/report.html",
            TOP + "attempts/1/results.json",
            COPY,
            TOP + "input/volume.nii.gz",
        ]
    )
    results = json.loads(storage.read(TOP + "attempts/1/results.json"))
    assert results["analyses"]["qc"]["artifacts"] == [TOP + "attempts/1/qc/preview_axial.png"]
    assert results["report"]["html"]["key"] == TOP + "attempts/1/report.html"
    assert results["dicom_outputs"][0]["key"] == TOP + "attempts/1/dicom/2.25.9.dcm"
    assert results["input"]["key"] == f"uploads/t/{STUDY}/00000.dcm"  # not under derived/: untouched
    before = dict(storage.objects)
    assert archive_attempt(storage, STUDY, 1) == 0  # a duplicate call
    assert storage.objects == before


class _CrashingStorage(InMemoryStorage):
    moves_left: int = 2

    def move(self, key: str, destination: str) -> None:
        if self.moves_left == 0:
            raise RuntimeError("crash")
        self.moves_left -= 1
        super().move(key, destination)


@pytest.mark.parametrize("crash_after", [0, 1, 2, 3])  # 3: results.json rewritten, not moved
def test_a_move_cut_short_resumes_to_the_same_end(crash_after: int):
    whole = InMemoryStorage()
    _attempt_one(whole)
    archive_attempt(whole, STUDY, 1)
    storage = _CrashingStorage()
    _attempt_one(storage)
    storage.moves_left = crash_after
    with pytest.raises(RuntimeError):
        archive_attempt(storage, STUDY, 1)
    storage.moves_left = 99
    archive_attempt(storage, STUDY, 1)
    assert storage.objects == whole.objects


def test_a_later_attempts_results_are_never_moved():
    storage = InMemoryStorage()
    _attempt_one(storage)
    archive_attempt(storage, STUDY, 1)
    storage.write(TOP + "results.json", json.dumps({"attempt": 2}).encode())
    storage.write(TOP + "report.html", b"2")
    assert archive_attempt(storage, STUDY, 1) == 0
    assert storage.read(TOP + "report.html") == b"2"


def test_each_ended_attempt_is_recorded_once():
    store = InMemoryStudyStore()
    study = tracking.create_study(
        store, STUDY, "t", analyses=["qc"], priority="normal", status=StudyStatus.COMPLETED
    )
    assert study is not None
    store.set_study_fields(STUDY, {"results_key": TOP + "results.json", "summary": {"qc": {"snr": 3}}})
    study = store.get_study(STUDY)
    assert study is not None
    assert record_ended_attempt(store, study) and not record_ended_attempt(store, study)
    (record,) = ended_attempts(store, STUDY)
    assert record["attempt"] == 1 and record["status"] == "COMPLETED"
    assert record["results_key"] == TOP + "attempts/1/results.json"
    assert record["summary"] == {"qc": {"snr": 3}} and record["started_at"] and record["ended_at"]
