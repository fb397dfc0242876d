"""Dispatch: turn a queued study attempt into its state machine execution."""

from __future__ import annotations

import os
from datetime import UTC, datetime

from aws_lambda_powertools.metrics import MetricUnit

from voxelpipe import telemetry, tracking
from voxelpipe.analyses import inputs_of, resolve, stages
from voxelpipe.gpu_settings import GpuSettings
from voxelpipe.inference.registry import model_analyses
from voxelpipe.messages import AnalysisRequest, ExecutionInput, WorkItem
from voxelpipe.observability import logger
from voxelpipe.pipeline.prior_pin import LONGITUDINAL, PRIOR_NEEDS, pin_prior, prior_study
from voxelpipe.ports import Executions, StudyStore
from voxelpipe.references import pin_references
from voxelpipe.status import StudyStatus
from voxelpipe.telemetry import Dimension, Metric
from voxelpipe.wiring import execution_name

ACTOR = "dispatch"


def dispatch(item: WorkItem, store: StudyStore, executions: Executions) -> str:
    """Start the execution `{study_id}-{attempt}`; returns what happened, for the logs.

    A duplicate message finds the execution already there and starts nothing (one audit row per
    attempt, however often the start is repeated); a message for a study that has moved on (deleted,
    or a newer attempt) is dropped.
    """
    study = store.get_study(item.study_id)
    if study is None or study.attempt != item.attempt or study.status != StudyStatus.QUEUED:
        state = "missing" if study is None else f"{study.status} at attempt {study.attempt}"
        return f"skipped: study is {state}"
    # A model analysis runs the newest READY version, at the time of dispatch, of the study's
    # tenant's model (else the deployment-wide one); the worker loads exactly that owner's.
    names = list(item.analyses)
    analyses = resolve(names, models=model_analyses(names, study.tenant))
    # A study of a subject that runs tissue-seg is compared with the subject's newest earlier
    # COMPLETED study that ran it: `longitudinal` is added, and that study pinned (docs/pipeline.md).
    prior = prior_study(study, store) if any(a.name == PRIOR_NEEDS for a in analyses) else None
    added = prior is not None and LONGITUDINAL not in {a.name for a in analyses}
    if added:
        names.append(LONGITUDINAL)
        analyses = resolve(names, models=model_analyses(names, study.tenant))
    prior_pin = pin_prior(prior, study) if prior is not None else None
    on_gpu = GpuSettings.from_env(os.environ).gpu_analyses
    present = {analysis.name for analysis in analyses}
    parameters = study.parameters or {}
    # Reference data (an atlas, a norms table) is fixed here too: the version the study names, else
    # the newest READY one now, so that the run, and a look at it later, uses exactly that.
    requests = {
        analysis.name: AnalysisRequest(
            name=analysis.name,
            version=analysis.version,
            runtime=analysis.deployed_runtime(on_gpu),
            parameters=parameters.get(analysis.name, {}),
            model_owner=analysis.owner,
            uses=[name for name in inputs_of(analysis, present) if name not in analysis.requires],
            references=pin_references(analysis, parameters.get(analysis.name, {}), study.tenant),
            # Asked for without an earlier study: it runs without one, and says so.
            prior=prior_pin if analysis.name == LONGITUDINAL else None,
        )
        for analysis in analyses
    }
    execution = ExecutionInput(
        study_id=item.study_id,
        attempt=item.attempt,
        tenant=item.tenant,
        input_key=item.input_key,
        analyses=list(requests.values()),
        stages=[[requests[a.name] for a in stage] for stage in stages(analyses)],
        subject=study.subject,
    )
    started = executions.start(execution)
    if started is None:
        return "duplicate: execution exists"
    # Keyed by the execution's own start time: a start repeated while it runs (Step Functions
    # answers it with the running execution) finds the row written and writes none.
    first = tracking.audit(
        store,
        item.study_id,
        "execution_started",
        actor=ACTOR,
        source=execution_name(item.study_id, item.attempt),
        detail={"priority": item.priority.value},
        once_at=started,
    )
    if first and added and prior_pin is not None:
        tracking.audit(
            store,
            item.study_id,
            "longitudinal_added",
            actor=ACTOR,
            source=execution_name(item.study_id, item.attempt),
            detail=prior_pin.model_dump(),
            once_at=started,
        )
    return "started" if first else "duplicate: execution running"


def dispatch_queued(
    item: WorkItem, store: StudyStore, executions: Executions, *, queue: str, sent_at: datetime
) -> str:
    """`dispatch` for a work item taken from `queue`, where it was sent at `sent_at`: how long it
    waited is measured (QueueAge), and what became of it logged."""
    waited_s = (datetime.now(UTC) - sent_at).total_seconds()
    telemetry.emit(Metric.QUEUE_AGE, max(0.0, waited_s), MetricUnit.Seconds, Dimension.QUEUE, queue)
    outcome = dispatch(item, store, executions)
    logger.info("dispatched", extra={"study_id": item.study_id, "outcome": outcome})
    return outcome
