"""Finalize: write the report, results.json, and mark the study COMPLETED."""

from __future__ import annotations

import json
from typing import Any

from voxelpipe import tracking
from voxelpipe.cost import PriceTable, StepUse, study_cost
from voxelpipe.keys import results_key
from voxelpipe.messages import FinalizeInput
from voxelpipe.observability import logger
from voxelpipe.pipeline.dicom_outputs import write_dicom_outputs
from voxelpipe.pipeline.report import report_reads, write_report
from voxelpipe.pipeline.subject_timeline import report_timeline
from voxelpipe.ports import ObjectStorage, PdfRenderer, StudyStore
from voxelpipe.records import StudyRecord, TaskRecord
from voxelpipe.results import build_results
from voxelpipe.status import StudyStatus, TaskStatus
from voxelpipe.study_data import writing_for
from voxelpipe.wiring import Prefix

STEP = "finalize"


def finalize(
    state: FinalizeInput, store: StudyStore, storage: ObjectStorage, renderer: PdfRenderer
) -> dict[str, str]:
    with writing_for(store, storage, state.study_id, writes=(Prefix.DERIVED,)):
        task = tracking.start_task(store, state.study_id, state.attempt, STEP)
        study = store.get_study(state.study_id)
        upload = dict(study.input or {}) if study is not None else {}
        tasks = store.tasks_of(state.study_id, state.attempt)
        timings = {
            record.step: float(record.duration_ms)
            for record in tasks
            if record.status == TaskStatus.SUCCEEDED and record.duration_ms is not None
        }
        document = build_results(state, upload, timings)
        cost = attempt_cost(state, study, tasks, task)
        document["provenance"]["cost"] = cost
        # The report is drawn from the document as it stands (cost counted up to here), and what
        # became of it is added after: the report never fails the study (pipeline/report.py).
        subject = study.subject if study is not None else None
        summary = {name: result["measures"] for name, result in document["analyses"].items()}
        timeline = _timeline(study, summary, store, state.study_id)
        report = write_report(state, document, subject, storage, renderer, timeline)
        document["report"] = report
        # DICOM-origin studies: SEG, SR and the report as DICOM (never failing the study either).
        dicom_outputs = write_dicom_outputs(state, study, document, storage)
        if dicom_outputs is not None:
            document["dicom_outputs"] = dicom_outputs
        key = results_key(state.study_id)
        storage.write(key, json.dumps(document, indent=2).encode(), content_type="application/json")
        # The task ends before the study does: whoever sees COMPLETED (a poller, a webhook) sees
        # every task of the attempt ended.
        tracking.finish_task(store, task, detail={"results_key": key})
        tracking.transition(
            store,
            state.study_id,
            state.attempt,
            StudyStatus.COMPLETED,
            changes={
                "results_key": key,
                "summary": summary,
                # A cohort export's analysis_version column (GET /measures) reads them here.
                "analysis_versions": dict(document["provenance"]["analyses"]),
                "cost": cost,
                "report": report,
            },
        )
    return {"results_key": key}


def _timeline(
    study: StudyRecord | None, summary: dict[str, Any], store: StudyStore, study_id: str
) -> dict[str, Any] | None:
    """The subject's timeline for the report; a timeline that cannot be read leaves it out (the
    report, like the study, never fails for it)."""
    if study is None:
        return None
    try:
        return report_timeline(study, summary, store)
    except Exception as error:
        logger.warning("report without timeline", extra={"study_id": study_id, "error": str(error)})
        return None


def attempt_cost(
    state: FinalizeInput, study: StudyRecord | None, tasks: list[TaskRecord], finalizing: TaskRecord
) -> dict[str, Any]:
    """The attempt's measured use and estimated cost (voxelpipe.cost) from its task rows, Finalize
    counted so far."""
    steps = [
        StepUse(record.step, float(record.duration_ms)) for record in tasks if record.duration_ms is not None
    ]
    steps.append(StepUse(STEP, (tracking.now() - finalizing.started_at).total_seconds() * 1000))
    uploads = len((study.manifest if study is not None else None) or [None])
    # S3 requests, counted from what the steps read and write (docs/operations.md): the uploads,
    # Prepare's reads and its canonical volume, each analysis's reads and writes, the report's
    # reads (the volume and the label maps) and writes (report.html, report.pdf), results.json.
    dicom = study is not None and study.input_format == "dicom"
    s3_gets = uploads + sum(1 + len(r.artifacts) for r in state.results) + report_reads(state)
    s3_puts = (
        uploads
        + 1
        + (uploads + 1 if dicom else 0)
        + sum(len(r.artifacts) + len(r.intermediates) + 1 for r in state.results)
        + 2
        + 1
    )
    return study_cost(
        steps,
        {request.name: request.runtime for request in state.analyses},
        stages=len(state.analysis_results),
        s3_gets=s3_gets,
        s3_puts=s3_puts,
        prices=PriceTable.from_environment(),
    )
