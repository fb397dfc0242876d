"""Finalize: write results.json and mark the study COMPLETED."""

from __future__ import annotations

import json

from voxelpipe import tracking
from voxelpipe.adapters.storage import Storage
from voxelpipe.keys import results_key
from voxelpipe.messages import FinalizeInput
from voxelpipe.records import StudyRecord
from voxelpipe.results import build_results
from voxelpipe.status import StudyStatus, TaskStatus

STEP = "finalize"


def finalize(state: FinalizeInput, storage: Storage) -> dict[str, str]:
    task = tracking.start_task(state.study_id, state.attempt, STEP)
    study = tracking.get_study(state.study_id)
    upload = dict(study.input or {}) if study is not None else {}
    timings = {
        record.step: float(record.duration_ms)
        for record in tracking.tasks_of(state.study_id, state.attempt)
        if record.status == TaskStatus.SUCCEEDED and record.duration_ms is not None
    }
    document = build_results(state, upload, timings)
    key = results_key(state.study_id)
    storage.write(key, json.dumps(document, indent=2).encode(), content_type="application/json")
    summary = {name: result["measures"] for name, result in document["analyses"].items()}
    tracking.transition(
        state.study_id,
        state.attempt,
        StudyStatus.COMPLETED,
        changes=[StudyRecord.results_key.set(key), StudyRecord.summary.set(summary)],
    )
    tracking.finish_task(task, detail={"results_key": key})
    return {"results_key": key}
