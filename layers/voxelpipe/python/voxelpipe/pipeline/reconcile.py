"""The reaper: studies stuck past their step's deadline are re-driven or FAILED, with an audit row.

`decide` is the whole policy, a pure function of what was observed and the time; `Reaper.reap`
observes (the study store, the attempt's execution, the work queue), decides and acts. Every action
is a conditional write naming the attempt and status it saw, so a run that races a step, or another
run, changes nothing twice. Each run looks at no more than `limit` studies of each status.

Each run also purges recently deleted studies again: a step that was running when its study was
deleted (in AWS, stopping an execution does not stop a Lambda or a GPU task already running) may
have written after the delete; once every such step can have ended, nothing of the study remains.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from voxelpipe import telemetry, tracking
from voxelpipe.function_specs import (
    FUNCTIONS,
    INGEST,
    MARK_FAILED,
    RUN_ANALYSIS,
    STEP_FUNCTIONS,
    FunctionSpec,
    analysis_of_step,
)
from voxelpipe.gpu_settings import GpuSettings
from voxelpipe.messages import Priority
from voxelpipe.observability import logger
from voxelpipe.pipeline.lifecycle import enqueue_study
from voxelpipe.ports import Executions, IdentityMaps, ObjectStorage, StudyStore, WorkQueues
from voxelpipe.records import StudyRecord
from voxelpipe.status import StudyStatus, TaskStatus
from voxelpipe.study_data import purge_study
from voxelpipe.telemetry import Dimension, Metric
from voxelpipe.wiring import execution_name
from voxelpipe.workflow_settings import (
    INGEST_ASYNC_RETRIES,
    INGEST_RETRY_DELAYS_S,
    QUEUE_MAX_RECEIVE_COUNT,
    QUEUE_VISIBILITY_TIMEOUT_S,
    REAPER_BATCH,
    REAPER_INTERVAL_MIN,
    RETRY_ATTEMPTS,
    STATE_MACHINE_TIMEOUT_S,
    retry_backoff_total_s,
    task_timeout_s,
)

ACTOR = "reaper"
STUCK = "Stuck"  # the error type of a study the reaper failed

# -- deadlines: how long each status or step may last, derived from the workflow's settings -----
# A state machine task runs once and retries RETRY_ATTEMPTS times, each try bounded by its task
# timeout, with backoff between; S3 invokes ingest once and retries INGEST_ASYNC_RETRIES times.
STEP_TRIES = 1 + RETRY_ATTEMPTS
INGEST_TRIES = 1 + INGEST_ASYNC_RETRIES
STATE_MACHINE_TIMEOUT = timedelta(seconds=STATE_MACHINE_TIMEOUT_S)
SLACK = timedelta(minutes=5)  # a study only just past a deadline is left to its own machinery

# Statuses and what their deadline is. AWAITING_UPLOAD: the upload URLs expire after an hour
# (api URL_EXPIRY) and a DICOM series waits for its `complete`; a day later nobody is coming.
INGEST_DEADLINE = timedelta(seconds=INGEST_TRIES * INGEST.timeout_s + INGEST_RETRY_DELAYS_S) + SLACK
DEADLINES: dict[StudyStatus, timedelta] = {
    StudyStatus.AWAITING_UPLOAD: timedelta(days=1),
    StudyStatus.VALIDATING: INGEST_DEADLINE,
    StudyStatus.VALIDATED: INGEST_DEADLINE,
    # By then the work item has started the execution or been moved to the dead-letter queue.
    StudyStatus.QUEUED: timedelta(seconds=QUEUE_MAX_RECEIVE_COUNT * QUEUE_VISIBILITY_TIMEOUT_S) + SLACK,
    # RUNNING: per step (step_deadline); this is the least time before a RUNNING study is looked at,
    # enough for MarkFailed to record an execution's failure.
    StudyStatus.RUNNING: timedelta(seconds=STEP_TRIES * task_timeout_s(MARK_FAILED.timeout_s)) + SLACK,
}
# How often a QUEUED study's work item is sent again before the study is failed instead.
MAX_REDRIVES = 2


def _spec_deadline(spec: FunctionSpec) -> timedelta:
    tries = STEP_TRIES * task_timeout_s(spec.timeout_s) + retry_backoff_total_s()
    return timedelta(seconds=tries) + SLACK


def _gpu_deadline(gpu: GpuSettings) -> timedelta:
    """Every try of a GPU task (infra/workflow.py RunOnGpu), each bounded by its task timeout."""
    tries = gpu.retry_attempts + 1
    backoff_s = sum(gpu.retry_interval_s * 2**n for n in range(gpu.retry_attempts))
    return timedelta(seconds=tries * gpu.task_timeout_s + backoff_s) + SLACK


def step_deadline(step: str, gpu: GpuSettings | None = None) -> timedelta:
    """How long a step's task row may stay RUNNING; an unknown step gets the execution's timeout.

    An analysis may run on Lambda or on the GPU workers (by deployment), so it gets the longer of
    the two runtimes' deadlines, never more than the execution's own timeout.
    """
    if step in STEP_FUNCTIONS:
        return _spec_deadline(STEP_FUNCTIONS[step])
    if analysis_of_step(step) is not None:
        longest = max(_spec_deadline(RUN_ANALYSIS), _gpu_deadline(gpu or GpuSettings()))
        return min(longest, STATE_MACHINE_TIMEOUT + SLACK)
    return STATE_MACHINE_TIMEOUT + SLACK


# -- the policy ------------------------------------------------------------------------------
class Action(StrEnum):
    WAIT = "wait"
    REDRIVE = "redriven"
    FAIL = "failed"


@dataclass(frozen=True)
class Observation:
    """What the reaper saw of one study attempt."""

    study_id: str
    attempt: int
    status: StudyStatus
    updated_at: datetime
    execution: str | None = None  # the execution's status; None when it has none
    running_step: str | None = None  # the step whose task row is RUNNING (the latest)
    step_started_at: datetime | None = None
    queue_backlog: int = 0  # messages in the study's work queue
    redrives: int = 0  # how often the reaper re-drove this attempt already


@dataclass(frozen=True)
class Decision:
    action: Action
    why: str
    stop_execution: bool = False


def decide(seen: Observation, now: datetime) -> Decision:
    """What to do with a study, from what was observed at `now`."""
    if seen.status.is_terminal or seen.status not in DEADLINES:
        return Decision(Action.WAIT, f"{seen.status} is terminal")
    waited = now - seen.updated_at
    deadline = DEADLINES[seen.status]
    if waited <= deadline and seen.status is not StudyStatus.RUNNING:
        return Decision(Action.WAIT, f"{seen.status} for {waited}, within {deadline}")
    running = seen.execution == "RUNNING"
    if seen.status is StudyStatus.AWAITING_UPLOAD:
        return Decision(Action.FAIL, f"no complete upload arrived within {deadline}")
    if seen.status is StudyStatus.VALIDATING:
        return Decision(Action.FAIL, f"validation did not end within {deadline}")
    if seen.status is StudyStatus.VALIDATED:
        return Decision(Action.REDRIVE, f"validated {waited} ago but never queued")
    if seen.status is StudyStatus.QUEUED:
        if running:
            if waited > STATE_MACHINE_TIMEOUT + SLACK:
                return Decision(Action.FAIL, "its execution never started a step", stop_execution=True)
            return Decision(Action.WAIT, "its execution is running")
        if seen.execution is not None:
            return Decision(Action.FAIL, f"its execution ended {seen.execution} but the study stayed QUEUED")
        if seen.queue_backlog > 0 and waited <= 2 * deadline:
            return Decision(Action.WAIT, f"its queue holds {seen.queue_backlog} messages")
        if seen.redrives >= MAX_REDRIVES:
            return Decision(Action.FAIL, f"no execution started after {seen.redrives} re-drives")
        return Decision(Action.REDRIVE, f"queued {waited} ago and no execution started")
    # RUNNING
    if not running:
        if waited <= deadline:
            return Decision(Action.WAIT, "its execution is ending")
        ended = "has no execution" if seen.execution is None else f"execution ended {seen.execution}"
        return Decision(Action.FAIL, f"its {ended} but the study stayed RUNNING")
    if seen.running_step is not None and seen.step_started_at is not None:
        limit = step_deadline(seen.running_step)
        if now - seen.step_started_at > limit:
            return Decision(
                Action.FAIL, f"step {seen.running_step} ran past its deadline of {limit}", stop_execution=True
            )
        return Decision(Action.WAIT, f"step {seen.running_step} is within its deadline")
    if waited > STATE_MACHINE_TIMEOUT + SLACK:
        return Decision(
            Action.FAIL, "its execution ran past the state machine's timeout", stop_execution=True
        )
    return Decision(Action.WAIT, "its execution is running")


# -- observing and acting --------------------------------------------------------------------
@dataclass(frozen=True)
class Outcome:
    study_id: str
    attempt: int
    status: str
    action: str
    why: str

    def as_json(self) -> dict[str, object]:
        return asdict(self)


# How long after its deletion a study is purged again by each run: until every step it may have had
# running (a Lambda's timeout, a GPU task's) has ended, with a run's interval to spare.
PURGE_WINDOW = (
    timedelta(seconds=max(max(spec.timeout_s for spec in FUNCTIONS), GpuSettings().task_timeout_s))
    + timedelta(minutes=2 * REAPER_INTERVAL_MIN)
    + SLACK
)


@dataclass(frozen=True)
class Reaper:
    """The reaper's use case, with the adapters it observes and acts through."""

    store: StudyStore
    storage: ObjectStorage
    executions: Executions
    queues: WorkQueues
    identity_maps: IdentityMaps  # a deleted study's identity map goes with its data

    def _redrives(self, study_id: str, attempt: int) -> int:
        return sum(
            1
            for row in self.store.audit_trail(study_id)
            if row.action == "reaped"
            and (row.detail or {}).get("action") == Action.REDRIVE.value
            and (row.detail or {}).get("attempt") == attempt
        )

    def observe(self, study: StudyRecord) -> Observation:
        status = StudyStatus(study.status)
        attempt = int(study.attempt)
        execution = (
            self.executions.status(study.study_id, attempt)
            if status in (StudyStatus.QUEUED, StudyStatus.RUNNING)
            else None
        )
        running = [
            task for task in self.store.tasks_of(study.study_id, attempt) if task.status == TaskStatus.RUNNING
        ]
        latest = running[-1] if running else None
        queued = status is StudyStatus.QUEUED
        return Observation(
            study_id=study.study_id,
            attempt=attempt,
            status=status,
            updated_at=study.updated_at,
            execution=execution,
            running_step=latest.step if latest else None,
            step_started_at=latest.started_at if latest else None,
            queue_backlog=self.queues.backlog(Priority(study.priority)) if queued else 0,
            redrives=self._redrives(study.study_id, attempt) if queued else 0,
        )

    def _fail(self, study: StudyRecord, seen: Observation, decision: Decision) -> bool:
        error = {"type": STUCK, "message": decision.why, "step": seen.running_step, "retryable": True}
        try:
            tracking.transition(
                self.store, study.study_id, seen.attempt, StudyStatus.FAILED, changes={"error": error}
            )
        except tracking.TransitionRefused:
            return False  # it moved on while we looked: nothing is stuck
        tracking.fail_running_tasks(self.store, study.study_id, seen.attempt, error)
        # After FAILED, so that a step the stop interrupts can no longer move the study.
        if decision.stop_execution or seen.execution == "RUNNING":
            self.executions.stop(study.study_id, seen.attempt, error=STUCK, cause=decision.why)
        return True

    def _redrive(self, study: StudyRecord, seen: Observation) -> bool:
        # VALIDATED -> QUEUED, or QUEUED again (which refreshes updated_at and so the deadline).
        try:
            queued = tracking.transition(self.store, study.study_id, seen.attempt, StudyStatus.QUEUED)
        except tracking.TransitionRefused:
            return False
        enqueue_study(self.queues, queued)  # the ingest path; dispatch treats a duplicate as done
        return True

    def act(self, study: StudyRecord, seen: Observation, decision: Decision) -> bool:
        """Carry a decision out, with its audit row; False when the study had moved on meanwhile."""
        if decision.action is Action.WAIT:
            return False
        done = (
            self._fail(study, seen, decision)
            if decision.action is Action.FAIL
            else self._redrive(study, seen)
        )
        if done:
            tracking.audit(
                self.store,
                study.study_id,
                "reaped",
                actor=ACTOR,
                source=execution_name(study.study_id, seen.attempt),
                detail={
                    "action": decision.action.value,
                    "why": decision.why,
                    "status_was": seen.status.value,
                    "attempt": seen.attempt,
                    "execution": seen.execution,
                },
            )
            telemetry.count(Metric.REAPED, Dimension.ACTION, decision.action.value)
            logger.warning("reaped a stuck study", extra={"study_id": study.study_id, "why": decision.why})
        return done

    def purge_deleted(self, now: datetime) -> int:
        """Purge every study deleted within the purge window again; the objects and rows removed."""
        return sum(
            purge_study(self.store, self.storage, self.identity_maps, study)
            for study in self.store.studies_in_status(
                StudyStatus.DELETED, updated_before=now, updated_after=now - PURGE_WINDOW
            )
        )

    def reap(self, now: datetime | None = None, limit: int = REAPER_BATCH) -> list[Outcome]:
        """One pass over the non-terminal statuses (waits left out of what it returns), then the
        recently deleted studies' purge."""
        now = now or tracking.now()
        outcomes: list[Outcome] = []
        for status, least in DEADLINES.items():
            # The status-updated index holds the oldest first: only those already past the least wait.
            for candidate in self.store.studies_in_status(status, updated_before=now - least, limit=limit):
                study = self.store.get_study(candidate.study_id)  # the index lags; act on the table
                if study is None or study.status != status.value:
                    continue
                seen = self.observe(study)
                decision = decide(seen, now)
                if self.act(study, seen, decision):
                    outcomes.append(
                        Outcome(
                            study.study_id, seen.attempt, status.value, decision.action.value, decision.why
                        )
                    )
        self.purge_deleted(now)
        return outcomes
