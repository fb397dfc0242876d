"""A registered regression model of the lambda runtime, end to end: RunAnalysis runs it (the local
cloud's worker process, held to the function's role), results.json carries its scalars."""

from __future__ import annotations

import gzip
import json

import boto3
import nibabel as nib
import numpy as np
import pytest

from infra.local.cloud import LocalCloud
from infra.local.studies import DEMO_TENANT, wait_for_terminal
from tests.fixtures.bad_nifti import make_good_nifti
from tests.fixtures.models import make_brain_age_model
from voxelpipe.adapters.storage import Storage
from voxelpipe.adapters.study_table import DynamoStudyStore
from voxelpipe.inference.registry import publish_model
from voxelpipe.keys import UploadKey, results_key
from voxelpipe.pipeline.register import register_study
from voxelpipe.status import StudyStatus, TaskStatus

STORE = DynamoStudyStore()


def test_a_lambda_runtime_brain_age_model_runs_in_run_analysis_and_reports_the_gap(cloud: LocalCloud):
    storage = Storage(cloud.bucket)
    # On the scan's own voxel size (2 x 2 x 2.5 mm): no resampling, so the mean is the scan's.
    data, spec = make_brain_age_model(0.25, 40.0, runtime="lambda", spacing_mm=[2.0, 2.0, 2.5])
    publish_model(DEMO_TENANT, "brain-age", data, spec, storage, actor="test")
    _, content = make_good_nifti()
    original = nib.Nifti1Image.from_bytes(gzip.decompress(content))
    study = register_study(
        STORE,
        DEMO_TENANT,
        analyses=["model:brain-age"],
        actor="test",
        source="local",
        subject={"subject_ref": "sub-1", "age": 52.0, "sex": "F"},
        files=[("scan.nii.gz", len(content))],
    )
    assert study.manifest is not None
    (entry,) = study.manifest
    key = UploadKey(DEMO_TENANT, study.study_id, entry["object"]).key
    boto3.client("s3").put_object(Bucket=cloud.bucket, Key=key, Body=content)

    record = wait_for_terminal([study.study_id], timeout_s=120)[study.study_id]
    assert record is not None and record.status == StudyStatus.COMPLETED, record and record.error
    measures = json.loads(storage.read(results_key(study.study_id)))["analyses"]["model:brain-age"][
        "measures"
    ]
    mean = float(np.asarray(original.get_fdata(), dtype=np.float64).mean())
    scalars = measures["outputs"]
    assert scalars["brain_age_years"]["unit"] == "years"
    assert scalars["brain_age_years"]["value"] == pytest.approx(0.25 * mean + 40.0, rel=1e-5)
    assert scalars["brain_age_gap"]["value"] == pytest.approx(0.25 * mean + 40.0 - 52.0, rel=1e-5)
    assert scalars["brain_age_gap"]["subject_value"] == 52.0
    # It ran in RunAnalysis (on the CPU): the execution's task went to the Lambda, not the GPU queue.
    assert measures["device"] == "cpu"
    history = boto3.client("stepfunctions").get_execution_history(
        executionArn=boto3.client("stepfunctions").list_executions(stateMachineArn=cloud.state_machine_arn)[
            "executions"
        ][0]["executionArn"],
        maxResults=1000,
    )["events"]
    entered = [e["stateEnteredEventDetails"]["name"] for e in history if "stateEnteredEventDetails" in e]
    assert "RunAnalysis" in entered and "RunOnGpu" not in entered, entered
    step = next(t for t in STORE.tasks_of(study.study_id, 1) if t.step == "analysis:model:brain-age")
    assert step.status == TaskStatus.SUCCEEDED
