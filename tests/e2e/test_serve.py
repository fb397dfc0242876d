"""`voxelpipe serve`: the API and S3 over real HTTP, as users reach a deployment."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import httpx
import pyarrow.parquet as pq
import pytest

from infra.cli.client import Client
from infra.local.samples import mni152_t1_path
from tests.fixtures.bad_nifti import make_good_nifti
from tests.fixtures.exams import make_exam
from tests.fixtures.serve import VOXELPIPE
from voxelpipe.api.auth import Role, mint_dev_token


@pytest.fixture(scope="module")
def server(multipart_server: str) -> str:
    """One server for the module (starting one is the slow part): the one that sends files over
    1 MiB through a multipart upload; every other file here is far smaller, and goes as it would
    to any server."""
    return multipart_server


def _client(url: str, tenant: str = "lab-a", role: Role = Role.UPLOADER) -> Client:
    return Client(url, mint_dev_token(tenant, role))


def test_create_upload_watch_results_and_download(multipart_server: str, tmp_path: Path):
    client = _client(multipart_server)
    small = tmp_path / "t1w.nii.gz"
    small.write_bytes(mni152_t1_path().read_bytes())
    created = client.create_study([small], analyses=["qc"], subject_ref="sub-7", age=70, sex="M")
    (target,) = created["uploads"]
    assert target["method"] == "multipart"  # 1.6 MB over the test's 1 MiB threshold
    sent = []
    client.upload(target, small, progress=sent.append)
    assert sum(sent) == small.stat().st_size
    view = client.wait(created["study_id"], timeout_s=120)
    assert view["status"] == "COMPLETED", view
    results = client.results(created["study_id"])
    assert results["results"]["analyses"]["qc"]["measures"]["header"]["dimensions"] == [197, 233, 189]
    written = client.download(results, tmp_path / "out")
    assert (tmp_path / "out" / "qc" / "preview_axial.png").read_bytes().startswith(b"\x89PNG")
    assert len(written) == len(results["artifacts"])


def test_the_report_of_an_unknown_or_unfinished_study_is_a_clear_error(server: str, tmp_path: Path):
    env = {**os.environ, "VOXELPIPE_API_URL": server, "VOXELPIPE_TOKEN": mint_dev_token("lab-a", Role.VIEWER)}
    run = subprocess.run(
        [str(VOXELPIPE), "report", "0" * 32], env=env, capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 1 and "voxelpipe report: 404" in run.stderr
    waiting = _client(server).http.post("/studies", json={"files": [{"name": "t1w.nii", "size": 10}]}).json()
    run = subprocess.run(
        [str(VOXELPIPE), "report", waiting["study_id"], "--out", str(tmp_path / "out")],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 1
    assert "is AWAITING_UPLOAD, not COMPLETED: it has no report yet" in run.stderr
    assert not (tmp_path / "out").exists()


def test_a_form_upload_larger_than_declared_is_refused_by_s3(server: str):
    client = _client(server)
    declared = 1000
    created = client.http.post("/studies", json={"files": [{"name": "t1w.nii", "size": declared}]}).json()
    (target,) = created["uploads"]
    assert target["method"] == "post"
    # The POST policy's content-length-range is exactly the declared size: S3 refuses the body.
    response = httpx.post(target["url"], data=target["fields"], files={"file": ("t1w.nii", b"\0" * 5000)})
    assert response.status_code == 400 and "<Code>EntityTooLarge</Code>" in response.text
    assert "<MaxSizeAllowed>1000</MaxSizeAllowed>" in response.text
    assert client.study(created["study_id"])["status"] == "AWAITING_UPLOAD"


def test_the_cli_uploads_waits_and_downloads(server: str, tmp_path: Path):
    env = {
        **os.environ,
        "VOXELPIPE_API_URL": server,
        "VOXELPIPE_TOKEN": mint_dev_token("lab-a", Role.UPLOADER),
    }
    bad = tmp_path / "notes.nii"
    bad.write_text("not a scan")
    run = subprocess.run(
        [str(VOXELPIPE), "upload", str(bad), "--wait", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    assert '"reason": "not_an_image"' in run.stdout
    listing = subprocess.run([str(VOXELPIPE), "list"], env=env, capture_output=True, text=True, timeout=60)
    assert "REJECTED" in listing.stdout
    viewer = {**env, "VOXELPIPE_TOKEN": mint_dev_token("lab-a", Role.VIEWER)}
    refused = subprocess.run(
        [str(VOXELPIPE), "upload", str(bad)], env=viewer, capture_output=True, text=True, timeout=60
    )
    assert refused.returncode == 1 and "403 forbidden" in refused.stderr


def test_the_cli_uploads_a_dicom_folder_and_reports_each_series_decision(server: str, tmp_path: Path):
    exam = make_exam()
    folder = tmp_path / "DOE_JANE_MRN0012345"  # names the CLI never sends
    for name, series in (("t1", exam.t1), ("scout", exam.localizer), ("flair", exam.flair)):
        (folder / name).mkdir(parents=True)
        for index, data in enumerate(series.instances):
            (folder / name / f"IM{index:04d}").write_bytes(data)
    (folder / "notes.txt").write_text("not an image")
    env = {
        **os.environ,
        "VOXELPIPE_API_URL": server,
        "VOXELPIPE_TOKEN": mint_dev_token("lab-a", Role.UPLOADER),
    }
    run = subprocess.run(
        [str(VOXELPIPE), "upload", str(folder), "--analyses", "qc", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    assert report["uploaded"]["files"] == len(exam.instances) and report["skipped"] == 1
    assert "uploading" in run.stderr and f"{len(exam.instances)}/{len(exam.instances)} files" in run.stderr
    decisions = {d["class"]: d for d in report["series"]}
    assert set(decisions) == {"T1", "LOCALIZER", "FLAIR"}, report
    t1, localizer, flair = decisions["T1"], decisions["LOCALIZER"], decisions["FLAIR"]
    assert t1["selected"] and t1["rule"] == "3d-t1" and t1["study_id"] and t1["explanation"]
    assert (localizer["selected"], localizer["rule"], localizer["study_id"]) == (
        False,
        "localizers-and-derived",
        None,
    )
    assert not flair["selected"] and flair["rule"] is None  # no rule of the default set matched it
    # What the study declares are the CLI's own names: nothing of the folder's reached the API.
    view = Client(server, env["VOXELPIPE_TOKEN"]).study(report["study_id"])
    assert "DOE" not in json.dumps(view) and "IM0000" not in json.dumps(view)
    assert {f["name"] for f in view["files"]} == {f"{i:05d}.dcm" for i in range(len(exam.instances))}


def test_the_cli_uploads_with_a_scan_date_and_lists_subjects(server: str, tmp_path: Path):
    tenant = "lab-cli-subjects"
    env = {
        **os.environ,
        "VOXELPIPE_API_URL": server,
        "VOXELPIPE_TOKEN": mint_dev_token(tenant, Role.UPLOADER),
    }
    scan = tmp_path / "t1w.nii"
    scan.write_text("not a scan: its registration is what counts here")
    upload = [str(VOXELPIPE), "upload", str(scan), "--subject-ref", "S-cli", "--age", "70"]
    refused = subprocess.run(
        [*upload[:3], "--scan-date", "2024-01-05"], env=env, capture_output=True, text=True, timeout=60
    )
    assert refused.returncode == 1 and "scan_date" in refused.stderr  # no subject: refused
    run = subprocess.run(
        [*upload, "--scan-date", "2024-01-05"], env=env, capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0, run.stderr
    shown = subprocess.run(
        [str(VOXELPIPE), "subjects", "S-cli", "--json"], env=env, capture_output=True, text=True, timeout=60
    )
    assert shown.returncode == 0, shown.stderr
    subject = json.loads(shown.stdout)
    assert subject["study_count"] == 1 and subject["studies"][0]["age"] == 70
    assert subject["studies"][0]["scan_date"] not in (None, "2024-01-05")
    listing = subprocess.run(
        [str(VOXELPIPE), "subjects"], env=env, capture_output=True, text=True, timeout=60
    )
    assert listing.returncode == 0 and listing.stdout.startswith("S-cli  1 studies")


def test_voxelpipe_export_writes_the_tenants_measures(server: str, tmp_path: Path):
    """GET /measures served as the export function (its role holds it), streamed, by the CLI."""
    client = _client(server, tenant="lab-export")
    scan = tmp_path / "scan.nii.gz"
    scan.write_bytes(make_good_nifti()[1])
    created = client.create_study([scan], analyses=["qc"], subject_ref="sub-9", age=60, sex="F")
    client.upload(created["uploads"][0], scan)
    assert client.wait(created["study_id"], timeout_s=120)["status"] == "COMPLETED"
    env = {
        **os.environ,
        "VOXELPIPE_API_URL": server,
        "VOXELPIPE_TOKEN": mint_dev_token("lab-export", Role.VIEWER),
    }
    output = tmp_path / "cohort.parquet"
    run = subprocess.run(
        [str(VOXELPIPE), "export", "--format", "parquet", "--output", str(output), "--subject", "sub-9"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    table = pq.read_table(output).to_pylist()
    assert run.stdout.startswith(f"{len(table)} rows (") and len(table) > 20
    assert {(row["study_id"], row["subject_ref"], row["analysis"]) for row in table} == {
        (created["study_id"], "sub-9", "qc")
    }
