"""Running `model:NAME` tasks: the GPU workers' batch entry point, and the RunAnalysis Lambda's.

`run_model_tasks` takes one micro-batch of tasks (any mix of models), and for each model runs
the windows of all its volumes (a segmentation model), or the volumes themselves (a regression or
classification model), through shared forward passes. Reading and decoding the next volumes (S3
bytes -> canonical volume -> the model's grid, normalised) happens in a thread pool while the
current ones are on the device, and writing results back happens there too. One bad task (a
missing volume, a model that will not load, an output that is not what the spec declares) gets
its exception in the result list; the others go on.

`run_model_analysis` runs one task in the RunAnalysis Lambda, for a model whose spec says
`runtime: lambda`: the same code on the CPU.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from voxelpipe import tracking
from voxelpipe.analyses.catalogue import AnalysisOutput
from voxelpipe.analysis_outputs import store_output
from voxelpipe.function_specs import analysis_step
from voxelpipe.inference.models import LoadedModel, ModelCache
from voxelpipe.inference.processing import (
    ModelInput,
    label_artifact,
    label_dtype,
    label_measures,
    preprocess,
    to_input_grid,
)
from voxelpipe.inference.registry import scope_of
from voxelpipe.inference.runner import SlidingWindowRunner
from voxelpipe.inference.scalars import scalar_measures
from voxelpipe.inference.spec import LABELS_FILE, ModelRef, model_name
from voxelpipe.messages import AnalysisResult, AnalysisTask
from voxelpipe.nifti import load_nifti
from voxelpipe.ports import ObjectStorage, StudyStore
from voxelpipe.records import TaskRecord
from voxelpipe.study_data import writing_for
from voxelpipe.thread_budget import apply_thread_budget, thread_budget
from voxelpipe.wiring import Prefix

# Threads reading, decoding and writing around the device's work (CPU-bound, mostly GIL-free).
DEFAULT_PREFETCH_WORKERS = min(8, os.cpu_count() or 2)
DEFAULT_MAX_BATCH_VOLUMES = 8


class NotAModelTask(ValueError):
    """A task whose analysis is not `model:NAME` of a named owner: the GPU workers run registered
    models only, exactly the (owner, name, version) dispatch chose."""


def model_ref(task: AnalysisTask) -> ModelRef:
    """The model a task runs: (owner, name, version), as dispatch resolved it."""
    name = model_name(task.analysis.name)
    if name is None:
        raise NotAModelTask(f"{task.analysis.name} is not a model:NAME analysis")
    if task.analysis.model_owner is None:
        raise NotAModelTask(f"{task.analysis.name}: the task names no model owner")
    return ModelRef(task.analysis.model_owner, name, task.analysis.version)


@dataclass(frozen=True)
class _Batch:
    model: LoadedModel
    indices: list[int]


def _read_and_prepare(task: AnalysisTask, model: LoadedModel, storage: ObjectStorage) -> ModelInput:
    """S3 bytes -> the volume on the model's grid, normalised (in a prefetch thread, on the CPU)."""
    image = load_nifti(storage.read(task.volume.volume_key))
    return preprocess(image, model.spec, task.volume.original_affine, task.volume.original_shape, "cpu")


def _infer(model: LoadedModel, inputs: Sequence[ModelInput]) -> list[npt.NDArray[Any]]:
    """Label maps on the model's grid, all volumes' windows batched together (segmentation); else
    each volume's output vector, float32."""
    volumes = [torch.from_numpy(inp.data)[None] for inp in inputs]
    with model.lock:
        if not isinstance(model.runner, SlidingWindowRunner):
            return [vector.numpy() for vector in model.runner.run(volumes)]
        # Narrowed on the device: 1 byte per voxel crosses to the host instead of 8. The label dtype
        # is processing's (torch names its dtypes as numpy does).
        narrow = getattr(torch, np.dtype(label_dtype(model.spec)).name)
        labels = model.runner.run(volumes, reduce="argmax")
        return [label.to(narrow).cpu().numpy() for label in labels]


def _finish(
    task: AnalysisTask,
    record: TaskRecord,
    model: LoadedModel,
    inp: ModelInput,
    prediction: npt.NDArray[Any],
    store: StudyStore,
    storage: ObjectStorage,
    started: float,
) -> AnalysisResult:
    """A segmentation model's label map on the input's grid, or a whole-volume model's scalars,
    written with their measures like any analysis' output."""
    measures: dict[str, Any] = {
        "model": model.name,
        "model_version": model.version,
        "model_scope": scope_of(model.ref.owner).value,
        "device": str(model.device),
    }
    if model.spec.kind == "segmentation":
        on_input = to_input_grid(prediction, inp, model.spec)
        measures.update(label_measures(on_input, inp.original_affine, model.spec))
        artifacts = {LABELS_FILE: label_artifact(on_input, inp.original_affine)}
    else:
        # A vector that is not what the spec declares fails this task here, named (ModelOutputMismatch).
        measures["kind"] = model.spec.kind
        measures.update(scalar_measures(prediction, model.spec, task.subject or {}))
        artifacts = {}
    output = AnalysisOutput(measures=measures, artifacts=artifacts)
    request = task.analysis
    with writing_for(store, storage, task.study_id, writes=(Prefix.DERIVED, Prefix.WORK)):
        result = store_output(
            task, request.name, model.version, dict(request.parameters), output, storage, started
        )
        tracking.finish_task(
            store, record, detail={"artifacts": result.artifacts, "device": str(model.device)}
        )
    return result


def _failed(store: StudyStore, record: TaskRecord | None, error: Exception) -> Exception:
    if record is not None:
        try:
            tracking.fail_task(store, record, {"type": type(error).__name__, "message": str(error)})
        except Exception as tracking_error:  # the task's own error is what matters
            error.add_note(f"recording the failure failed too: {tracking_error}")
    return error


Outcome = AnalysisResult | Exception
OnResult = Callable[[int, Outcome], None]


def run_model_tasks(
    tasks: Sequence[AnalysisTask],
    store: StudyStore,
    storage: ObjectStorage,
    cache: ModelCache,
    *,
    prefetch_workers: int = DEFAULT_PREFETCH_WORKERS,
    max_batch_volumes: int = DEFAULT_MAX_BATCH_VOLUMES,
    on_result: OnResult | None = None,
) -> list[Outcome]:
    """Run every task; one entry per task, in order: its result, or the exception that stopped it.

    Tasks of the same model (owner, name and version) share forward passes, up to `max_batch_volumes`
    volumes at a time; each model is loaded once through `cache`. A segmentation model's label map
    goes to derived/{study_id}/model:NAME/labels.nii.gz (a whole-volume model's scalars are
    measures only) and results to work/ exactly as Lambda analyses write theirs; each task has its
    step row (`analysis:model:NAME`).

    `on_result(index, outcome)` is called as soon as each task's outcome is known (before the
    batch ends; from any thread, once per task), e.g. to answer its task token early.
    """
    started = time.perf_counter()
    outcomes: list[Outcome | None] = [None] * len(tasks)
    records: list[TaskRecord | None] = [None] * len(tasks)
    settling = threading.Lock()

    def settle(index: int, outcome: Outcome) -> None:
        with settling:
            outcomes[index] = outcome
        if on_result is not None:
            on_result(index, outcome)

    def fail(index: int, error: Exception) -> None:
        settle(index, _failed(store, records[index], error))

    groups: dict[ModelRef, list[int]] = {}
    for index, task in enumerate(tasks):
        try:
            ref = model_ref(task)
        except NotAModelTask as error:
            fail(index, error)
            continue
        try:
            records[index] = tracking.start_task(
                store, task.study_id, task.attempt, analysis_step(task.analysis.name)
            )
        except Exception as error:
            fail(index, error)
            continue
        groups.setdefault(ref, []).append(index)

    batches: list[_Batch] = []
    for ref, indices in groups.items():
        try:
            model = cache.get(storage, ref)
        except Exception as error:
            for index in indices:
                fail(index, error)
            continue
        step = max(1, max_batch_volumes)
        batches.extend(_Batch(model, indices[i : i + step]) for i in range(0, len(indices), step))

    with ThreadPoolExecutor(max_workers=max(1, prefetch_workers), thread_name_prefix="prefetch") as pool:

        def submit_reads(batch: _Batch) -> list[Future[ModelInput]]:
            return [pool.submit(_read_and_prepare, tasks[i], batch.model, storage) for i in batch.indices]

        def finished(index: int) -> Callable[[Future[AnalysisResult]], None]:
            def done(future: Future[AnalysisResult]) -> None:
                error = future.exception()
                if error is None:
                    settle(index, future.result())
                else:
                    fail(index, error if isinstance(error, Exception) else RuntimeError(str(error)))

            return done

        reads = submit_reads(batches[0]) if batches else []
        for number, batch in enumerate(batches):
            # The next batch decodes while this one computes.
            upcoming = submit_reads(batches[number + 1]) if number + 1 < len(batches) else []
            ready: list[tuple[int, ModelInput]] = []
            for index, read in zip(batch.indices, reads, strict=True):
                try:
                    ready.append((index, read.result()))
                except Exception as error:
                    fail(index, error)
            for index, inp, prediction in _infer_isolating(batch.model, ready, fail):
                record = records[index]
                assert record is not None
                future = pool.submit(
                    _finish, tasks[index], record, batch.model, inp, prediction, store, storage, started
                )
                future.add_done_callback(finished(index))
            reads = upcoming
    # Leaving the pool waited for every write and its callback.
    assert all(outcome is not None for outcome in outcomes)
    return [outcome for outcome in outcomes if outcome is not None]


def _infer_isolating(
    model: LoadedModel, ready: list[tuple[int, ModelInput]], fail: Callable[[int, Exception], None]
) -> list[tuple[int, ModelInput, npt.NDArray[Any]]]:
    """Run the volumes together; if that fails, each alone, so one bad volume fails only its task."""
    if not ready:
        return []
    try:
        predictions = _infer(model, [inp for _, inp in ready])
        return [(index, inp, out) for (index, inp), out in zip(ready, predictions, strict=True)]
    except Exception as error:
        if len(ready) == 1:
            fail(ready[0][0], error)
            return []
    done = []
    for index, inp in ready:
        try:
            done.append((index, inp, _infer(model, [inp])[0]))
        except Exception as error:
            fail(index, error)
    return done


# The RunAnalysis Lambda's model, kept loaded between the invocations of a warm container: one at
# a time (a container may serve many models; each could be up to MAX_LAMBDA_MODEL_BYTES).
_lambda_cache: ModelCache | None = None
_lambda_cache_lock = threading.Lock()


def run_model_analysis(task: AnalysisTask, store: StudyStore, storage: ObjectStorage) -> AnalysisResult:
    """One `model:NAME` task in the RunAnalysis Lambda (its spec says `runtime: lambda`): the workers'
    code on the CPU, the model kept loaded for the container's next invocation. Raises what stopped
    it (its task row already FAILED), as any analysis does there."""
    global _lambda_cache
    ref = model_ref(task)
    with _lambda_cache_lock:
        if _lambda_cache is None or ref not in _lambda_cache:
            _lambda_cache = ModelCache("cpu")
        cache = _lambda_cache
    # One analysis per invocation: it gets the function's CPUs, as run_analysis gives them.
    apply_thread_budget(thread_budget().threads)
    (outcome,) = run_model_tasks([task], store, storage, cache, prefetch_workers=1)
    if isinstance(outcome, Exception):
        raise outcome
    return outcome
