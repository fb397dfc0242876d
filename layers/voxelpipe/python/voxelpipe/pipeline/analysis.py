"""RunAnalysis: one catalogue analysis on the prepared volume; artifacts to derived/."""

from __future__ import annotations

import mimetypes
import time

from voxelpipe import tracking
from voxelpipe.adapters.storage import Storage
from voxelpipe.analyses import AnalysisInput, resolve
from voxelpipe.keys import derived_key
from voxelpipe.messages import AnalysisResult, AnalysisTask
from voxelpipe.nifti import load_nifti


class AnalysisVersionMismatch(RuntimeError):
    """The execution asked for a version of an analysis this code does not provide."""


def run_analysis(task: AnalysisTask, storage: Storage) -> AnalysisResult:
    started = time.perf_counter()
    request = task.analysis
    (analysis,) = resolve([request.name])
    if analysis.version != request.version:
        raise AnalysisVersionMismatch(
            f"{request.name} {request.version} requested; this code has {analysis.version}"
        )
    record = tracking.start_task(task.study_id, task.attempt, f"analysis:{analysis.name}")
    image = load_nifti(storage.read(task.volume.volume_key))
    output = analysis.run(
        AnalysisInput(
            image=image,
            original_orientation=task.volume.original_orientation,
            parameters={**analysis.parameters, **request.parameters},
        )
    )
    artifacts = []
    for name, data in output.artifacts.items():
        key = derived_key(task.study_id, analysis.name, name)
        storage.write(key, data, content_type=mimetypes.guess_type(name)[0] or "application/octet-stream")
        artifacts.append(key)
    duration_ms = round((time.perf_counter() - started) * 1000, 1)
    tracking.finish_task(record, detail={"artifacts": artifacts})
    return AnalysisResult(
        analysis=analysis.name,
        version=analysis.version,
        parameters={**analysis.parameters, **request.parameters},
        measures=output.measures,
        artifacts=artifacts,
        duration_ms=duration_ms,
    )
