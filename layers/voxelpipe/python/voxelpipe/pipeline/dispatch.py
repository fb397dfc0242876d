"""Dispatch: turn a queued study attempt into its state machine execution."""

from __future__ import annotations

import os

from voxelpipe import tracking
from voxelpipe.adapters import executions
from voxelpipe.analyses import resolve, stages
from voxelpipe.gpu.settings import GpuSettings
from voxelpipe.inference.registry import model_analyses
from voxelpipe.messages import AnalysisRequest, ExecutionInput, WorkItem
from voxelpipe.status import StudyStatus
from voxelpipe.wiring import execution_name

ACTOR = "dispatch"


def dispatch(item: WorkItem) -> str:
    """Start the execution `{study_id}-{attempt}`; returns what happened, for the logs.

    A duplicate message finds the execution already there and starts nothing; a message for a
    study that has moved on (deleted, or a newer attempt) is dropped.
    """
    study = tracking.get_study(item.study_id)
    if study is None or study.attempt != item.attempt or study.status != StudyStatus.QUEUED:
        state = "missing" if study is None else f"{study.status} at attempt {study.attempt}"
        return f"skipped: study is {state}"
    # A model analysis runs the newest READY version, at the time of dispatch, of the study's
    # tenant's model (else the deployment-wide one); the worker loads exactly that owner's.
    analyses = resolve(item.analyses, models=model_analyses(item.analyses, study.tenant))
    on_gpu = GpuSettings.from_env(os.environ).gpu_analyses
    requests = {
        analysis.name: AnalysisRequest(
            name=analysis.name,
            version=analysis.version,
            runtime=analysis.deployed_runtime(on_gpu),
            parameters=(study.parameters or {}).get(analysis.name, {}),
            model_owner=analysis.owner,
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
    if not executions.start_execution(execution):
        return "duplicate: execution exists"
    tracking.audit(
        item.study_id,
        "execution_started",
        actor=ACTOR,
        source=execution_name(item.study_id, item.attempt),
        detail={"priority": item.priority.value},
    )
    return "started"
