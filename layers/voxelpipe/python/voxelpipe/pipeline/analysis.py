"""RunAnalysis: one catalogue analysis on the prepared volume; artifacts to derived/.

Each run also records its result under work/ (outputs/{analysis}.json, with its intermediates),
where the analyses that require it find it in a later stage.
"""

from __future__ import annotations

import mimetypes
import time
from typing import Any

import numpy as np

from voxelpipe import tracking
from voxelpipe.adapters.storage import Storage
from voxelpipe.analyses import AnalysisInput, AnalysisOutput, resolve
from voxelpipe.function_specs import analysis_step
from voxelpipe.keys import derived_key, work_key
from voxelpipe.messages import AnalysisResult, AnalysisTask
from voxelpipe.nifti import load_nifti


class AnalysisVersionMismatch(RuntimeError):
    """The execution asked for a version of an analysis this code does not provide."""


def _output_key(task: AnalysisTask, analysis: str, name: str = "result.json") -> str:
    return work_key(task.study_id, task.attempt, f"outputs/{analysis}/{name}")


def _requirement(task: AnalysisTask, name: str, storage: Storage) -> AnalysisOutput:
    """What a required analysis produced in an earlier stage: measures, artifacts, intermediates."""
    result = AnalysisResult.model_validate_json(storage.read(_output_key(task, name)))
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
    storage: Storage,
    started: float,
) -> AnalysisResult:
    """Write an analysis' artifacts (derived/), intermediates and result (work/); the result.

    Every runtime records its output this way (the GPU workers too), so Finalize and the
    analyses that require this one find it in the same place.
    """
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


def run_analysis(task: AnalysisTask, storage: Storage) -> AnalysisResult:
    started = time.perf_counter()
    request = task.analysis
    analysis = resolve([request.name])[-1]
    if analysis.version != request.version:
        raise AnalysisVersionMismatch(
            f"{request.name} {request.version} requested; this code has {analysis.version}"
        )
    record = tracking.start_task(task.study_id, task.attempt, analysis_step(analysis.name))
    image = load_nifti(storage.read(task.volume.volume_key))
    parameters = {**analysis.parameters, **request.parameters}
    output = analysis.run(
        AnalysisInput(
            image=image,
            original_orientation=task.volume.original_orientation,
            parameters=parameters,
            original_affine=np.asarray(task.volume.original_affine, dtype=np.float64),
            original_shape=tuple(task.volume.original_shape),
            subject=task.subject or {},
            requirements={name: _requirement(task, name, storage) for name in analysis.requires},
        )
    )
    result = store_output(task, analysis.name, analysis.version, parameters, output, storage, started)
    tracking.finish_task(record, detail={"artifacts": result.artifacts})
    return result
