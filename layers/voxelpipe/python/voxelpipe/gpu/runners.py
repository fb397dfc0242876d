"""What a GPU worker runs for a micro-batch: catalogue analyses one by one, registered models together."""

from __future__ import annotations

from collections.abc import Sequence

from voxelpipe.gpu.worker import OnResult, Outcome, Runner
from voxelpipe.inference.spec import model_name
from voxelpipe.messages import AnalysisTask
from voxelpipe.pipeline.analysis import run_analysis
from voxelpipe.ports import ObjectStorage, StudyStore


def catalogue_runner(store: StudyStore, storage: ObjectStorage) -> Runner:
    """A catalogue analysis (e.g. tissue-seg deployed on the gpu runtime): the same `run_analysis` as
    the Lambda, one task at a time (its torch code picks CUDA when present)."""

    def run(tasks: Sequence[AnalysisTask], on_result: OnResult) -> list[Outcome]:
        outcomes: list[Outcome] = []
        for index, task in enumerate(tasks):
            outcome: Outcome
            try:
                outcome = run_analysis(task, store, storage)
            except Exception as error:  # one study's failure is its own
                outcome = error
            on_result(index, outcome)  # answered now, not after the rest of the batch
            outcomes.append(outcome)
        return outcomes

    return run


def routing_runner(catalogue: Runner, models: Runner) -> Runner:
    """A micro-batch holds one analysis: `model:NAME` goes to the model runner, the rest to the catalogue."""

    def run(tasks: Sequence[AnalysisTask], on_result: OnResult) -> Sequence[Outcome]:
        if tasks and model_name(tasks[0].analysis.name) is not None:
            return models(tasks, on_result)
        return catalogue(tasks, on_result)

    return run
