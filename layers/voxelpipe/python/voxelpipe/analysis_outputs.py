"""Where an analysis' output goes, and how a later analysis reads it back.

Every runtime records its output this way (RunAnalysis on Lambda, the GPU workers' catalogue and
model tasks), so Finalize and the analyses that require one find it in the same place: artifacts
under derived/{study_id}/{analysis}/, the result (with intermediates meant only for the analyses
that require it) under work/{study_id}/{attempt}/outputs/{analysis}/.
"""

from __future__ import annotations

import mimetypes
import time
from typing import Any

from voxelpipe.analyses import AnalysisOutput
from voxelpipe.keys import derived_key, work_key
from voxelpipe.messages import AnalysisResult, AnalysisTask
from voxelpipe.ports import ObjectStorage


def _output_key(task: AnalysisTask, analysis: str, name: str = "result.json") -> str:
    return work_key(task.study_id, task.attempt, f"outputs/{analysis}/{name}")


def stored_output(task: AnalysisTask, analysis: str, storage: ObjectStorage) -> AnalysisOutput:
    """What an analysis produced in an earlier stage of the same attempt: measures, artifacts,
    intermediates."""
    result = AnalysisResult.model_validate_json(storage.read(_output_key(task, analysis)))
    return AnalysisOutput(
        measures=result.measures,
        artifacts={key.rsplit("/", 1)[-1]: storage.read(key) for key in result.artifacts},
        intermediates={key.rsplit("/", 1)[-1]: storage.read(key) for key in result.intermediates},
    )


def store_output(
    task: AnalysisTask,
    analysis: str,
    version: str,
    parameters: dict[str, Any],
    output: AnalysisOutput,
    storage: ObjectStorage,
    started: float,
) -> AnalysisResult:
    """Write an analysis' artifacts (derived/), intermediates and result (work/); the result."""
    artifacts = []
    for name, data in output.artifacts.items():
        key = derived_key(task.study_id, analysis, name)
        storage.write(key, data, content_type=mimetypes.guess_type(name)[0] or "application/octet-stream")
        artifacts.append(key)
    intermediates = []
    for name, data in output.intermediates.items():
        key = _output_key(task, analysis, name)
        storage.write(key, data)
        intermediates.append(key)
    result = AnalysisResult(
        analysis=analysis,
        version=version,
        parameters=parameters,
        measures=output.measures,
        artifacts=artifacts,
        intermediates=intermediates,
        duration_ms=round((time.perf_counter() - started) * 1000, 1),
    )
    storage.write(_output_key(task, analysis), result.model_dump_json().encode(), "application/json")
    return result
