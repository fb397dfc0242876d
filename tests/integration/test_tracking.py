"""Status transitions against DynamoDB (moto): forward only, and only within the current attempt."""

from __future__ import annotations

import pytest

from infra.local.cloud import LocalCloud
from voxelpipe import tracking
from voxelpipe.messages import FailureInput, StepError
from voxelpipe.pipeline.failure import mark_failed
from voxelpipe.records import StudyRecord
from voxelpipe.status import StudyStatus, TaskStatus

STUDY = "d" * 32


def test_transitions_move_forward_and_repeat_but_never_back(cloud: LocalCloud):
    tracking.create_study(STUDY, "lab", analyses=["qc"], priority="normal")
    assert tracking.create_study(STUDY, "lab", analyses=["qc"], priority="normal") is None
    for status in (StudyStatus.VALIDATING, StudyStatus.VALIDATED, StudyStatus.QUEUED, StudyStatus.RUNNING):
        assert tracking.transition(STUDY, 1, status).status == status
    tracking.transition(STUDY, 1, StudyStatus.RUNNING)  # a retried step: a no-op
    with pytest.raises(tracking.TransitionRefused, match="RUNNING at attempt 1"):
        tracking.transition(STUDY, 1, StudyStatus.QUEUED)
    tracking.transition(STUDY, 1, StudyStatus.COMPLETED, changes=[StudyRecord.results_key.set("k")])
    with pytest.raises(tracking.TransitionRefused):
        tracking.transition(STUDY, 1, StudyStatus.FAILED)
    record = tracking.get_study(STUDY)
    assert record.status == StudyStatus.COMPLETED and record.results_key == "k"


def test_a_stale_attempt_cannot_overwrite_a_newer_outcome(cloud: LocalCloud):
    tracking.create_study(STUDY, "lab", analyses=["qc"], priority="normal", status=StudyStatus.RUNNING)
    # A reprocess opened attempt 2 (issue 3's API does this); attempt 1's execution is stale.
    StudyRecord(STUDY).update(
        actions=[StudyRecord.attempt.set(2), StudyRecord.status.set(StudyStatus.QUEUED)]
    )
    with pytest.raises(tracking.TransitionRefused, match="attempt 2"):
        tracking.transition(STUDY, 1, StudyStatus.COMPLETED)
    outcome = mark_failed(FailureInput(study_id=STUDY, attempt=1, error=StepError(Error="States.Timeout")))
    assert outcome["marked"] is False
    record = tracking.get_study(STUDY)
    assert record.status == StudyStatus.QUEUED and record.attempt == 2 and record.error is None


def test_tasks_record_progress_timings_and_errors(cloud: LocalCloud):
    task = tracking.start_task(STUDY, 1, "prepare")
    tracking.set_progress(task, 140)
    assert tracking.tasks_of(STUDY, 1)[0].progress == 100
    tracking.finish_task(task, detail={"volume_key": "work/x"})
    other = tracking.start_task(STUDY, 2, "prepare")
    tracking.fail_task(other, {"type": "ValueError", "message": "bad"})
    first, second = tracking.tasks_of(STUDY)
    assert (first.attempt, first.status, first.detail) == (1, TaskStatus.SUCCEEDED, {"volume_key": "work/x"})
    assert first.duration_ms is not None and first.finished_at >= first.started_at
    assert (second.attempt, second.status, second.error["type"]) == (2, TaskStatus.FAILED, "ValueError")
    assert [t.attempt for t in tracking.tasks_of(STUDY, 2)] == [2]


def test_the_audit_trail_is_append_only_and_ordered(cloud: LocalCloud):
    for action in ("registered", "queued", "failed"):
        tracking.audit(STUDY, action, actor="test", source="here", detail={"n": action})
    assert [row.action for row in tracking.audit_trail(STUDY)] == ["registered", "queued", "failed"]
