"""Bad input through the whole local cloud: a clear REJECTED with a reason code, never a crash."""

from __future__ import annotations

import math

import boto3
import pytest

from infra.local.cloud import LocalCloud
from infra.local.studies import report, submit, wait_for_terminal
from tests.fixtures.bad_nifti import bad_nifti_cases, extreme_nifti_cases, make_good_nifti
from voxelpipe import tracking
from voxelpipe.adapters.study_table import DynamoStudyStore
from voxelpipe.keys import UploadKey, new_study_id
from voxelpipe.pipeline.register import RegistrationRefused
from voxelpipe.rejections import ReasonCode
from voxelpipe.status import StudyStatus, TaskStatus
from voxelpipe.wiring import EnvVar

STORE = DynamoStudyStore()

ALL_CASES = bad_nifti_cases()
# A file name with path tricks is refused when the study is registered (the server stores each file
# under a name of its own); only a writer with direct access to the bucket can use one in a key.
NAME_CASES = [case for case in ALL_CASES if case.reason is ReasonCode.INVALID_NAME]
CASES = [case for case in ALL_CASES if case.reason is not ReasonCode.INVALID_NAME]


def _keys(cloud: LocalCloud, prefix: str) -> list[str]:
    listing = boto3.client("s3").list_objects_v2(Bucket=cloud.bucket, Prefix=prefix)
    return [item["Key"] for item in listing.get("Contents", [])]


def test_every_malformed_upload_ends_rejected_with_its_reason(
    cloud: LocalCloud, monkeypatch: pytest.MonkeyPatch
):
    submitted = {}
    for case in CASES:
        monkeypatch.setenv(EnvVar.MAX_UPLOAD_BYTES, str(case.limits.max_upload_bytes))
        submitted[submit(cloud, case.content, case.filename)] = case
    records = wait_for_terminal(list(submitted), timeout_s=120)

    outcomes = {case.id: (records[sid].status, records[sid].reason) for sid, case in submitted.items()}
    assert outcomes == {case.id: (StudyStatus.REJECTED, case.reason.value) for case in CASES}
    for study_id, case in submitted.items():
        record = records[study_id]
        assert record.reason_detail, f"{case.id} says why"
        (task,) = STORE.tasks_of(study_id, 1)
        assert task.step == "validate" and task.status == TaskStatus.FAILED
        assert task.error["reason"] == case.reason.value
        # The upload left uploads/ for quarantine/.
        assert _keys(cloud, f"uploads/demo/{study_id}/") == []
        assert _keys(cloud, f"quarantine/demo/{study_id}/") != []
        assert [row.action for row in STORE.audit_trail(study_id)] == ["registered", "rejected"]
        summary = report(cloud, study_id, case.filename).as_json()
        assert summary["status"] == "REJECTED" and summary["reason"] == case.reason.value
    assert not [i for i in cloud.invocations if i.error], "no handler crashed"
    assert (
        boto3.client("stepfunctions").list_executions(stateMachineArn=cloud.state_machine_arn)["executions"]
        == []
    )


def test_a_file_name_with_path_tricks_is_refused_at_registration_and_in_a_direct_upload(cloud: LocalCloud):
    for case in NAME_CASES:
        with pytest.raises(RegistrationRefused) as refused:
            submit(cloud, case.content, case.filename)
        assert refused.value.field == "files.0.name", case.id
    # Straight to the bucket (no registration): the key's name is checked at ingest.
    direct = {new_study_id(): case for case in NAME_CASES if "/" not in case.filename}
    for study_id, case in direct.items():
        key = f"uploads/demo/{study_id}/{case.filename}"
        boto3.client("s3").put_object(Bucket=cloud.bucket, Key=key, Body=case.content)
    records = wait_for_terminal(list(direct), timeout_s=60)
    assert {sid: (r.status, r.reason) for sid, r in records.items() if r is not None} == {
        sid: (StudyStatus.REJECTED, "invalid_name") for sid in direct
    }


def _finite_numbers(value: object) -> bool:
    if isinstance(value, dict):
        return all(_finite_numbers(item) for item in value.values())
    if isinstance(value, list):
        return all(_finite_numbers(item) for item in value)
    return not isinstance(value, float) or math.isfinite(value)


def test_uploads_at_the_edges_of_nifti_are_analysed(cloud: LocalCloud):
    # 64-bit integers, values filling float32's range, a subnormal slope: accepted, so they must
    # come through Prepare and qc COMPLETED, with finite measures (never FAILED for their values).
    cases = extreme_nifti_cases()
    submitted = {submit(cloud, case.content, case.filename): case for case in cases}
    records = wait_for_terminal(list(submitted), timeout_s=120)
    outcomes = {case.variant: records[sid].status for sid, case in submitted.items()}
    assert outcomes == {case.variant: StudyStatus.COMPLETED for case in cases}
    for study_id, case in submitted.items():
        results = report(cloud, study_id, case.filename).as_json()["results"]
        qc = results["qc"]
        assert _finite_numbers(qc), case.variant
        assert qc["intensity"]["nonfinite_fraction"] == 0.0, case.variant
        assert qc["foreground"]["fraction"] > 0, case.variant
    assert not [i for i in cloud.invocations if i.error], "no handler crashed"


def test_an_unknown_analysis_is_rejected_naming_the_catalogue(cloud: LocalCloud):
    # Registration refuses unknown names; a study can still hold one if the catalogue changed
    # between its registration and its upload.
    with pytest.raises(RegistrationRefused, match="no-such-analysis"):
        submit(cloud, b"", "never-sent.nii", analyses=["no-such-analysis"])
    study_id = new_study_id()
    tracking.create_study(STORE, study_id, "demo", analyses=["qc", "no-such-analysis"], priority="normal")
    _, content = make_good_nifti()
    boto3.client("s3").put_object(
        Bucket=cloud.bucket, Key=UploadKey("demo", study_id, "ok.nii.gz").key, Body=content
    )
    record = wait_for_terminal([study_id], timeout_s=60)[study_id]
    assert record.status == StudyStatus.REJECTED and record.reason == "unknown_analysis"
    assert "no-such-analysis" in record.reason_detail and "qc" in record.reason_detail


def test_an_object_outside_the_upload_layout_is_quarantined_without_a_study(cloud: LocalCloud):
    s3 = boto3.client("s3")
    s3.put_object(Bucket=cloud.bucket, Key="uploads/stray.nii", Body=b"whatever")
    assert _keys(cloud, "uploads/") == []
    assert _keys(cloud, "quarantine/stray.nii") == ["quarantine/stray.nii"]
    (call,) = [i for i in cloud.invocations if i.function == "ingest" and "Records" in i.event]
    assert call.error is None


def test_a_second_upload_to_a_finished_study_is_ignored_and_audited(cloud: LocalCloud):
    _, content = make_good_nifti()
    study_id = submit(cloud, content, "first.nii.gz")
    assert wait_for_terminal([study_id], timeout_s=60)[study_id].status == StudyStatus.COMPLETED
    boto3.client("s3").put_object(
        Bucket=cloud.bucket, Key=UploadKey("demo", study_id, "second.nii.gz").key, Body=content
    )
    record = wait_for_terminal([study_id], timeout_s=60)[study_id]
    assert record.status == StudyStatus.COMPLETED and record.attempt == 1
    assert "upload_ignored" in [row.action for row in STORE.audit_trail(study_id)]
