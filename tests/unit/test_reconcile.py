"""The reaper's policy: decisions from observations and a clock, no AWS."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from voxelpipe.function_specs import PREPARE, RUN_ANALYSIS
from voxelpipe.gpu_settings import GpuSettings
from voxelpipe.pipeline.reconcile import (
    DEADLINES,
    INGEST_TRIES,
    MAX_REDRIVES,
    STEP_TRIES,
    Action,
    Observation,
    decide,
    step_deadline,
)
from voxelpipe.status import StudyStatus
from voxelpipe.workflow_settings import INGEST_ASYNC_RETRIES, RETRY_ATTEMPTS, retry_backoff_total_s

T0 = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def seen(status: StudyStatus, **fields) -> Observation:
    return Observation(study_id="s1", attempt=1, status=status, updated_at=T0, **fields)


def test_deadlines_follow_the_workflow_and_the_function_timeouts():
    assert STEP_TRIES == 1 + RETRY_ATTEMPTS
    assert INGEST_TRIES == 1 + INGEST_ASYNC_RETRIES
    assert retry_backoff_total_s() == 2 + 4 + 8  # 2 s, doubling, 3 retries
    assert step_deadline("prepare") > timedelta(seconds=STEP_TRIES * PREPARE.timeout_s)
    assert step_deadline("analysis:tissue-seg") > timedelta(seconds=STEP_TRIES * RUN_ANALYSIS.timeout_s)
    assert step_deadline("prepare") < step_deadline("analysis:qc")  # prepare's timeout is shorter
    assert step_deadline("something-new") > step_deadline("analysis:qc")  # unknown: the longest


def test_an_analysis_on_the_gpu_workers_has_time_for_every_try_within_the_execution_timeout():
    gpu = GpuSettings()
    tries = gpu.retry_attempts + 1
    assert step_deadline("analysis:model:brain") > timedelta(seconds=tries * gpu.task_timeout_s)
    longer = GpuSettings(task_timeout_s=4 * 3600)
    assert step_deadline("analysis:model:brain", longer) == step_deadline("something-new")


@pytest.mark.parametrize("status", list(DEADLINES))
def test_nothing_is_done_within_a_deadline(status: StudyStatus):
    just_in_time = T0 + DEADLINES[status]
    observation = seen(status, execution="RUNNING", running_step="prepare", step_started_at=T0)
    assert decide(observation, just_in_time).action is Action.WAIT


def test_terminal_studies_are_never_touched():
    for status in (StudyStatus.COMPLETED, StudyStatus.FAILED, StudyStatus.REJECTED, StudyStatus.DELETED):
        assert decide(seen(status), T0 + timedelta(days=30)).action is Action.WAIT


def test_a_validated_study_never_queued_is_redriven():
    late = T0 + DEADLINES[StudyStatus.VALIDATED] + timedelta(seconds=1)
    assert decide(seen(StudyStatus.VALIDATED), late).action is Action.REDRIVE


def test_a_queued_study_without_execution_is_redriven_then_failed():
    late = T0 + DEADLINES[StudyStatus.QUEUED] + timedelta(seconds=1)
    assert decide(seen(StudyStatus.QUEUED), late).action is Action.REDRIVE
    gave_up = decide(seen(StudyStatus.QUEUED, redrives=MAX_REDRIVES), late)
    assert gave_up.action is Action.FAIL and "re-drives" in gave_up.why


def test_a_queued_study_waits_while_its_queue_is_backed_up_but_not_forever():
    deadline = DEADLINES[StudyStatus.QUEUED]
    busy = seen(StudyStatus.QUEUED, queue_backlog=40)
    assert decide(busy, T0 + deadline + timedelta(seconds=1)).action is Action.WAIT
    assert decide(busy, T0 + 2 * deadline + timedelta(seconds=1)).action is Action.REDRIVE


def test_a_queued_study_whose_execution_ended_is_failed():
    late = T0 + DEADLINES[StudyStatus.QUEUED] + timedelta(seconds=1)
    decision = decide(seen(StudyStatus.QUEUED, execution="FAILED"), late)
    assert decision.action is Action.FAIL and not decision.stop_execution


def test_a_running_step_past_its_deadline_fails_the_study_and_stops_the_execution():
    observation = seen(StudyStatus.RUNNING, execution="RUNNING", running_step="prepare", step_started_at=T0)
    assert decide(observation, T0 + step_deadline("prepare")).action is Action.WAIT
    decision = decide(observation, T0 + step_deadline("prepare") + timedelta(seconds=1))
    assert decision.action is Action.FAIL and decision.stop_execution
    assert "prepare" in decision.why


def test_a_long_analysis_is_left_alone_where_prepare_would_not_be():
    at = T0 + step_deadline("prepare") + timedelta(minutes=1)
    analysis = seen(StudyStatus.RUNNING, execution="RUNNING", running_step="analysis:qc", step_started_at=T0)
    assert decide(analysis, at).action is Action.WAIT


def test_a_running_study_whose_execution_ended_is_failed_after_markfailed_had_its_chance():
    ended = seen(StudyStatus.RUNNING, execution="SUCCEEDED")
    assert decide(ended, T0 + DEADLINES[StudyStatus.RUNNING]).action is Action.WAIT
    decision = decide(ended, T0 + DEADLINES[StudyStatus.RUNNING] + timedelta(seconds=1))
    assert decision.action is Action.FAIL and "SUCCEEDED" in decision.why
    missing = decide(seen(StudyStatus.RUNNING), T0 + timedelta(days=1))
    assert missing.action is Action.FAIL and "no execution" in missing.why


def test_uploads_that_never_come_and_validation_that_never_ends_fail():
    assert decide(seen(StudyStatus.AWAITING_UPLOAD), T0 + timedelta(hours=23)).action is Action.WAIT
    assert decide(seen(StudyStatus.AWAITING_UPLOAD), T0 + timedelta(days=1, seconds=1)).action is Action.FAIL
    late = T0 + DEADLINES[StudyStatus.VALIDATING] + timedelta(seconds=1)
    assert decide(seen(StudyStatus.VALIDATING), late).action is Action.FAIL
