import pytest

from voxelpipe import analyses
from voxelpipe.analyses import CATALOGUE, Analysis, AnalysisOutput, UnknownAnalysis, resolve, stages
from voxelpipe.gpu_settings import GpuSettings
from voxelpipe.wiring import EnvVar, Runtime


def _fake(name: str, *requires: str) -> Analysis:
    return Analysis(
        name=name,
        version="1",
        runtime=Runtime.LAMBDA,
        description=name,
        run=lambda _: AnalysisOutput(measures={}),
        requires=requires,
    )


@pytest.fixture
def catalogue(monkeypatch):
    fakes = {
        a.name: a for a in (_fake("a"), _fake("b", "a"), _fake("c", "b"), _fake("d"), _fake("e", "a", "d"))
    }
    monkeypatch.setattr(analyses, "CATALOGUE", fakes)
    return fakes


def test_requirements_are_added_and_come_first(catalogue):
    assert [a.name for a in resolve(["c"])] == ["a", "b", "c"]
    assert [a.name for a in resolve(["e", "c", "a"])] == ["a", "d", "e", "b", "c"]


def test_stages_run_requirements_first_and_independent_analyses_together(catalogue):
    grouped = stages(resolve(["c", "e", "d"]))
    assert [[a.name for a in stage] for stage in grouped] == [["a", "d"], ["b", "e"], ["c"]]
    assert stages([]) == []


def test_unknown_and_circular_requirements_are_refused(catalogue, monkeypatch):
    with pytest.raises(UnknownAnalysis, match="nope"):
        resolve(["a", "nope"])
    monkeypatch.setitem(catalogue, "x", _fake("x", "y"))
    monkeypatch.setitem(catalogue, "y", _fake("y", "x"))
    with pytest.raises(ValueError, match="x -> y -> x"):
        resolve(["x"])


def test_a_deployment_may_move_a_catalogue_analysis_to_the_gpu_workers():
    settings = GpuSettings.from_env({EnvVar.GPU_ANALYSES: " tissue-seg, ,normative"})
    assert settings.gpu_analyses == ("tissue-seg", "normative")
    assert GpuSettings.from_env(settings.routing_env()).gpu_analyses == settings.gpu_analyses
    assert GpuSettings.from_env({}).gpu_analyses == ()
    tissue_seg, qc = CATALOGUE["tissue-seg"], CATALOGUE["qc"]
    assert tissue_seg.deployed_runtime(settings.gpu_analyses) is Runtime.GPU
    assert tissue_seg.describe(settings.gpu_analyses)["runtime"] == "gpu"
    assert tissue_seg.describe()["runtime"] == tissue_seg.runtime.value == "lambda"
    assert qc.deployed_runtime(settings.gpu_analyses) is Runtime.LAMBDA
