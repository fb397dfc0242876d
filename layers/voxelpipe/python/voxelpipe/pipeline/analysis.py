"""RunAnalysis: one catalogue analysis on the prepared volume; its output stored for Finalize and
the analyses that require it (`analysis_outputs`)."""

from __future__ import annotations

import time

import numpy as np

from voxelpipe import tracking
from voxelpipe.analyses import AnalysisInput, resolve
from voxelpipe.analysis_outputs import store_output, stored_output
from voxelpipe.function_specs import analysis_step
from voxelpipe.inference.spec import model_name
from voxelpipe.messages import AnalysisResult, AnalysisTask
from voxelpipe.nifti import load_nifti
from voxelpipe.pipeline.prior_load import load_prior
from voxelpipe.ports import ObjectStorage, StudyStore
from voxelpipe.references import load_references
from voxelpipe.study_data import writing_for
from voxelpipe.thread_budget import apply_thread_budget, thread_budget
from voxelpipe.wiring import Prefix


class AnalysisVersionMismatch(RuntimeError):
    """The execution asked for a version of an analysis this code does not provide."""


def run_analysis(task: AnalysisTask, store: StudyStore, storage: ObjectStorage) -> AnalysisResult:
    if model_name(task.analysis.name) is not None:  # a registered model of the lambda runtime
        from voxelpipe.inference.tasks import run_model_analysis  # torch: imported for models only

        return run_model_analysis(task, store, storage)
    started = time.perf_counter()
    request = task.analysis
    analysis = resolve([request.name])[-1]
    if analysis.version != request.version:
        raise AnalysisVersionMismatch(
            f"{request.name} {request.version} requested; this code has {analysis.version}"
        )
    with writing_for(store, storage, task.study_id, writes=(Prefix.DERIVED, Prefix.WORK)):
        record = tracking.start_task(store, task.study_id, task.attempt, analysis_step(analysis.name))
        # The reference data dispatch fixed, read before anything runs: a version retired since
        # (or never READY) fails the analysis with ReferenceUnavailable, saying which.
        references = load_references(request.references, storage)
        # longitudinal: the subject's earlier study dispatch pinned (PriorUnavailable when it has
        # been deleted or reprocessed since).
        prior = None
        if request.prior is not None:
            study = store.get_study(task.study_id)
            tenant = study.tenant if study is not None else ""
            prior = load_prior(request.prior, tenant, store, storage)
        image = load_nifti(storage.read(task.volume.volume_key))
        # One analysis per Lambda invocation or GPU worker task at a time: it gets the process's CPUs.
        apply_thread_budget(thread_budget().threads)
        parameters = {**analysis.parameters, **request.parameters}
        output = analysis.run(
            AnalysisInput(
                image=image,
                original_orientation=task.volume.original_orientation,
                parameters=parameters,
                original_affine=np.asarray(task.volume.original_affine, dtype=np.float64),
                original_shape=tuple(task.volume.original_shape),
                subject=task.subject or {},
                requirements={
                    name: stored_output(task, name, storage) for name in (*analysis.requires, *request.uses)
                },
                references=references,
                prior=prior,
            )
        )
        result = store_output(task, analysis.name, analysis.version, parameters, output, storage, started)
        tracking.finish_task(store, record, detail={"artifacts": result.artifacts})
    return result
