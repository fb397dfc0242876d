"""Analyses that require others run after them, and see what they produced."""

from __future__ import annotations

import json

import boto3
import pytest

from infra.local.cloud import LocalCloud
from infra.local.studies import submit, wait_for_terminal
from tests.fixtures.bad_nifti import make_good_nifti
from voxelpipe import analyses
from voxelpipe.adapters.study_table import DynamoStudyStore
from voxelpipe.analyses import Analysis, AnalysisInput, AnalysisOutput
from voxelpipe.keys import results_key
from voxelpipe.status import StudyStatus
from voxelpipe.wiring import Runtime

STORE = DynamoStudyStore()


def _voxel_count(inputs: AnalysisInput) -> AnalysisOutput:
    count = int(inputs.image.get_fdata().size)
    return AnalysisOutput(
        measures={"voxels": count},
        artifacts={"count.txt": str(count).encode()},
        intermediates={"raw.bin": count.to_bytes(8, "little")},
    )


def _doubled(inputs: AnalysisInput) -> AnalysisOutput:
    before = inputs.requirements["count"]
    assert inputs.original_shape is not None and inputs.original_affine is not None
    return AnalysisOutput(
        measures={
            "doubled": 2 * before.measures["voxels"],
            "from_intermediate": int.from_bytes(before.intermediates["raw.bin"], "little"),
            "from_artifact": int(before.artifacts["count.txt"]),
            "age": inputs.subject.get("age"),
        }
    )


@pytest.fixture
def staged(monkeypatch):
    count = Analysis("count", "1", Runtime.LAMBDA, "counts voxels", _voxel_count)
    doubled = Analysis("doubled", "1", Runtime.LAMBDA, "doubles it", _doubled, requires=("count",))
    monkeypatch.setitem(analyses.CATALOGUE, "count", count)
    monkeypatch.setitem(analyses.CATALOGUE, "doubled", doubled)


def test_a_dependent_analysis_runs_in_a_later_stage_with_its_requirements_output(
    cloud_in_process: LocalCloud, staged
):
    # The analyses are registered in this process's catalogue: the cloud runs them here.
    cloud = cloud_in_process
    _, content = make_good_nifti()
    study_id = submit(cloud, content, "scan.nii.gz", analyses=["doubled", "qc"])
    record = wait_for_terminal([study_id], timeout_s=60)[study_id]
    assert record.status == StudyStatus.COMPLETED, record.error
    assert record.analyses == ["count", "doubled", "qc"]  # the requirement was added

    steps = STORE.tasks_of(study_id, 1)
    started = {task.step: task for task in steps}
    assert started["analysis:doubled"].started_at >= started["analysis:count"].finished_at

    document = json.loads(
        boto3.client("s3").get_object(Bucket=cloud.bucket, Key=results_key(study_id))["Body"].read()
    )
    voxels = document["analyses"]["count"]["measures"]["voxels"]
    assert document["analyses"]["doubled"]["measures"] == {
        "doubled": 2 * voxels,
        "from_intermediate": voxels,
        "from_artifact": voxels,
        "age": None,
    }
    assert list(document["analyses"]) == ["count", "qc", "doubled"]  # by stage
