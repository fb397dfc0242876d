"""Cohort export through the API (GET /measures), against moto: a 1,000-study cohort as CSV and
Parquet read back with pandas, the filters, bad requests, tenants kept apart, a large export through
S3 with a 303, and a study run through the pipeline exported with its analysis version."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import boto3
import httpx
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from infra.cli.client import ApiError, Client
from infra.cli.export import rows_in, run_export
from infra.cli.main import _parser
from infra.local.cloud import LocalCloud
from infra.local.serve import acting_as
from infra.local.studies import wait_for_terminal
from tests.fixtures.bad_nifti import make_good_nifti
from tests.fixtures.cloud import checked_cloud
from tests.fixtures.cohort import ROWS, VERSIONS, cohort_study, rows_of
from tests.fixtures.events import load_event
from voxelpipe.adapters.study_table import DynamoStudyStore
from voxelpipe.analyses.catalogue import QC
from voxelpipe.api.app import create_app
from voxelpipe.api.auth import Role, mint_dev_token
from voxelpipe.cohort import COLUMNS, ROW_ATTRIBUTES
from voxelpipe.function_specs import API, EXPORT
from voxelpipe.records import AccessRecord, StudyRecord
from voxelpipe.status import StudyStatus
from voxelpipe.wiring import EnvVar

COHORT = 1000  # lab-a's studies, all COMPLETED
OTHER = 20  # lab-b's COMPLETED studies; then its FAILED ones: the filters are tried on lab-b
FAILED = 5
COHORT_ROWS = sum(rows_of(i) for i in range(COHORT))
OTHER_ROWS = sum(rows_of(i) for i in range(OTHER))


@pytest.fixture(scope="module")
def cohort_cloud(template: dict[str, Any]) -> Iterator[LocalCloud]:
    """One local cloud for the module, its studies table holding the cohorts (batch writes)."""
    with checked_cloud(template) as cloud:
        with StudyRecord.batch_write() as batch:
            for i in range(COHORT):
                batch.save(cohort_study(i, "lab-a"))
            for i in range(OTHER):
                batch.save(cohort_study(i, "lab-b"))
            for i in range(OTHER, OTHER + FAILED):
                batch.save(cohort_study(i, "lab-b", status=StudyStatus.FAILED))
        yield cloud


@pytest.fixture
def export(cohort_cloud: LocalCloud, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    """The app as the export function runs it (its role holds the calls), answers streamed."""
    monkeypatch.setenv(EnvVar.AUTH_MODE, "dev")
    monkeypatch.delenv(EnvVar.EXPORT_INLINE_MAX_BYTES, raising=False)
    with TestClient(acting_as(cohort_cloud, EXPORT.name, create_app()), follow_redirects=False) as client:
        yield client


def auth(tenant: str = "lab-a", role: Role = Role.VIEWER) -> dict[str, str]:
    return {"authorization": f"Bearer {mint_dev_token(tenant, role)}"}


def _csv(client: TestClient, tenant: str = "lab-a", **params: Any) -> pd.DataFrame:
    response = client.get("/measures", params=params, headers=auth(tenant))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/csv")
    return pd.read_csv(io.BytesIO(response.content), dtype={"subject_ref": str, "scan_date": str})


def test_a_1000_study_cohort_exports_as_csv_and_parquet(
    export: TestClient, cohort_cloud: LocalCloud, monkeypatch: pytest.MonkeyPatch
):
    # As the export function answers: within Lambda's response payload, or through S3.
    monkeypatch.setenv(EnvVar.EXPORT_INLINE_MAX_BYTES, str(EXPORT.settings[EnvVar.EXPORT_INLINE_MAX_BYTES]))
    response = export.get("/measures", params={"format": "csv"}, headers=auth())
    assert response.status_code == 303  # about 8 MB of CSV: too large for an answer
    location = urlparse(response.headers["location"])
    key = location.path.lstrip("/").removeprefix(f"{cohort_cloud.bucket}/")
    assert key.startswith("exports/lab-a/") and key.endswith(".csv") and "Signature" in location.query
    body = boto3.client("s3").get_object(Bucket=cohort_cloud.bucket, Key=key)["Body"].read()
    assert len(body) > 4 * 1024 * 1024
    table = pd.read_csv(io.BytesIO(body), dtype={"subject_ref": str, "scan_date": str})
    assert tuple(table.columns) == COLUMNS
    assert len(table) == COHORT_ROWS == 1000 * 48 + 500 * ROWS["longitudinal"]
    assert table["study_id"].nunique() == COHORT and set(table["status"]) == {"COMPLETED"}
    per_study = table.groupby("study_id").size()
    assert per_study[cohort_study(0, "lab-a").study_id] == rows_of(0) == 48
    assert per_study[cohort_study(999, "lab-a").study_id] == rows_of(999) == 61
    study = table[table["study_id"] == cohort_study(321, "lab-a").study_id].set_index(["analysis", "measure"])
    gm = study.loc[("volumetrics", "gm_ml")]
    assert (gm["value"], gm["unit"], gm["analysis_version"]) == (632.1, "mL", VERSIONS["volumetrics"])
    assert (gm["subject_ref"], gm["age"], gm["sex"], gm["attempt"]) == ("sub-0160", 71.0, "M", 1)
    rate = study.loc[("longitudinal", "regions.brain.paired_rate_pct_per_year")]
    assert (rate["value"], rate["unit"]) == (-0.61, "%/year")
    assert study.loc[("normative", "scores.gm_ml.z")]["unit"] == "z-score"
    assert study.loc[("volumetrics", "bpf")]["unit"] == "fraction"
    assert study.loc[("qc", "header.voxel_size_mm.2")]["unit"] == "mm"
    assert pd.isna(study.loc[("qc", "snr")]["unit"])  # no unit: an empty field

    response = export.get("/measures", params={"format": "parquet"}, headers=auth())
    assert response.status_code == 200  # compressed, it fits an answer
    assert response.headers["content-type"] == "application/vnd.apache.parquet"
    assert 'filename="measures.parquet"' in response.headers["content-disposition"]
    parquet = pd.read_parquet(io.BytesIO(response.content))
    assert len(parquet) == COHORT_ROWS and tuple(parquet.columns) == COLUMNS
    # The same rows in both, in the same order (newest study first).
    assert list(parquet["measure"]) == list(table["measure"])
    assert parquet["value"].tolist() == pytest.approx(table["value"].tolist())
    assert parquet["study_id"].iloc[0] == cohort_study(COHORT - 1, "lab-a").study_id


def test_the_filters(export: TestClient):
    everything = _csv(export, tenant="lab-b")  # streamed (no payload limit here)
    assert everything["study_id"].nunique() == OTHER and len(everything) == OTHER_ROWS
    subject = _csv(export, tenant="lab-b", subject="sub-0004")
    assert set(subject["study_id"]) == {cohort_study(i, "lab-b").study_id for i in (8, 9)}
    assert len(subject) == rows_of(8) + rows_of(9)
    # Created 2026-01-01 + i minutes: studies 10 to 19 (on the index's range key: lab-a's cohort).
    created = _csv(export, since="2026-01-01T00:10:00Z", until="2026-01-01T00:19:00Z")
    assert set(created["study_id"]) == {cohort_study(i, "lab-a").study_id for i in range(10, 20)}
    longitudinal = _csv(export, tenant="lab-b", analysis="longitudinal")
    assert len(longitudinal) == OTHER // 2 * ROWS["longitudinal"]
    assert set(longitudinal["analysis"]) == {"longitudinal"}
    two = export.get("/measures?analysis=qc&analysis=bpf-none&subject=sub-0004", headers=auth("lab-b"))
    assert len(pd.read_csv(io.BytesIO(two.content))) == 2 * ROWS["qc"]
    failed = _csv(export, tenant="lab-b", status="FAILED")
    assert failed["study_id"].nunique() == FAILED and set(failed["status"]) == {"FAILED"}
    assert failed["completed_at"].isna().all()
    assert len(_csv(export, tenant="lab-b", subject="sub-9999")) == 0  # the header alone


def test_the_scan_date_filter(export: TestClient):
    # Scanned 2024-01-01 + i days: studies 11 to 13.
    scanned = _csv(export, tenant="lab-b", **{"from": "2024-01-12", "to": "2024-01-14"})
    assert set(scanned["study_id"]) == {cohort_study(i, "lab-b").study_id for i in (11, 12, 13)}
    assert set(scanned["scan_date"]) == {"2024-01-12", "2024-01-13", "2024-01-14"}


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"format": "xlsx"}, "format"),
        ({"from": "last tuesday"}, "from"),
        ({"to": "2024-13-01"}, "to"),
        ({"from": "2024-02-02", "to": "2024-02-01"}, "from"),
        ({"since": "2026-02-01T00:00:00Z", "until": "2026-01-01T00:00:00Z"}, "since"),
        ({"status": "DONE"}, "status"),
        ({"subject": "Doe, John"}, "subject"),
        ({"analysis": "../regional"}, "analysis.0"),
    ],
)
def test_a_bad_format_or_filter_is_a_422_problem(export: TestClient, params: dict[str, str], field: str):
    response = export.get("/measures", params=params, headers=auth())
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["code"] == "validation_failed" and [e["field"] for e in problem["errors"]] == [field]


def test_a_tenant_sees_only_its_own_rows_and_needs_a_token(export: TestClient):
    other = _csv(export, tenant="lab-b", subject="sub-0000")
    assert set(other["study_id"]) == {cohort_study(i, "lab-b").study_id for i in (0, 1)}  # not lab-a's
    assert len(_csv(export, tenant="lab-c")) == 0
    assert export.get("/measures").status_code == 401


def test_a_completed_study_exports_with_its_analysis_version(
    cohort_cloud: LocalCloud, monkeypatch: pytest.MonkeyPatch
):
    """Finalize keeps each analysis's version on the record, where the export reads it."""
    monkeypatch.setenv(EnvVar.AUTH_MODE, "dev")
    _, content = make_good_nifti()
    cloud = cohort_cloud
    with TestClient(acting_as(cloud, API.name, create_app())) as api:
        body = {"files": [{"name": "scan.nii.gz", "size": len(content)}], "subject_ref": "sub-1", "age": 70}
        created = api.post("/studies", json=body, headers=auth("lab-z", Role.UPLOADER)).json()
    boto3.client("s3").put_object(Bucket=cloud.bucket, Key=created["uploads"][0]["key"], Body=content)
    assert wait_for_terminal([created["study_id"]], timeout_s=60)[created["study_id"]].status == "COMPLETED"
    with TestClient(acting_as(cloud, EXPORT.name, create_app())) as client:
        table = _csv(client, tenant="lab-z")
    assert set(table["study_id"]) == {created["study_id"]} and set(table["analysis"]) == {"qc"}
    assert set(table["analysis_version"]) == {QC.version} and set(table["subject_ref"]) == {"sub-1"}
    assert table["completed_at"].notna().all() and len(table) > 20
    assert table.set_index("measure").loc["foreground.volume_ml", "unit"] == "mL"
    # The export function's role wrote the export's access audit row (its IAM allows the append).
    (row,) = [r for r in AccessRecord.query("lab-z", consistent_read=True) if r.action == "measures.export"]
    assert (row.status, row.resource["format"]) == (200, "csv")


def test_voxelpipe_export_follows_the_303_without_its_token_and_counts_the_rows(
    export: TestClient, cohort_cloud: LocalCloud, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys
):
    """The CLI against the route as the export function answers (here, everything through S3)."""
    monkeypatch.setenv(EnvVar.EXPORT_INLINE_MAX_BYTES, "1000")
    downloaded: list[str] = []

    def s3(request: httpx.Request) -> httpx.Response:
        # The presigned GET: fetched from moto's bucket, and never with the user's token.
        assert "authorization" not in request.headers
        downloaded.append(request.url.path)
        key = request.url.path.lstrip("/").removeprefix(f"{cohort_cloud.bucket}/")
        body = boto3.client("s3").get_object(Bucket=cohort_cloud.bucket, Key=key)["Body"].read()
        return httpx.Response(200, content=body)

    client = Client("http://testserver", mint_dev_token("lab-b", Role.VIEWER))
    client.http = export
    export.headers["authorization"] = f"Bearer {client.token}"
    client.downloads = httpx.Client(transport=httpx.MockTransport(s3))
    for table_format in ("csv", "parquet"):
        output = tmp_path / f"cohort.{table_format}"
        args = _parser().parse_args(
            [
                *("export", "--format", table_format, "--output", str(output)),
                *("--analysis", "volumetrics", "--analysis", "normative", "--subject", "sub-0003"),
                *(("--json",) if table_format == "parquet" else ()),
            ]
        )
        assert run_export(args, client) == 0
        rows = 2 * (ROWS["volumetrics"] + ROWS["normative"])
        printed = capsys.readouterr().out
        if table_format == "parquet":
            assert json.loads(printed) == {
                "rows": rows,
                "bytes": output.stat().st_size,
                "output": str(output),
                "format": "parquet",
            }
        else:
            assert printed.startswith(f"{rows} rows ({output.stat().st_size} bytes) written to")
        assert rows_in(output, table_format) == rows
    assert len(downloaded) == 2 and all("/exports/lab-b/" in path for path in downloaded)
    bad = _parser().parse_args(["export", "--output", str(tmp_path / "x.csv"), "--status", "DONE"])
    with pytest.raises(ApiError, match="422 validation_failed"):
        run_export(bad, client)


def test_the_export_function_answers_api_gateway_csv_as_text_and_parquet_as_base64(cohort_cloud: LocalCloud):
    """The export Lambda as API Gateway calls it (a REST proxy event, Cognito's claims)."""
    event = load_event("api_get_study.json", TENANT="lab-b", ROLE="viewer", STUDY_ID="x")
    answers = {}
    for table_format in ("csv", "parquet"):
        query = {"format": table_format, "subject": "sub-0003", "analysis": "volumetrics"}
        call = {
            **event,
            "resource": "/measures",
            "path": "/measures",
            "pathParameters": None,
            "queryStringParameters": query,
            "multiValueQueryStringParameters": {name: [value] for name, value in query.items()},
        }
        response, error = cohort_cloud.invoke(EXPORT.name, call)
        assert error is None and response["statusCode"] == 200, response
        answers[table_format] = response
    assert answers["csv"]["isBase64Encoded"] is False
    assert len(pd.read_csv(io.StringIO(answers["csv"]["body"]))) == 2 * ROWS["volumetrics"]
    assert answers["parquet"]["isBase64Encoded"] is True
    parquet = pd.read_parquet(io.BytesIO(base64.b64decode(answers["parquet"]["body"])))
    assert len(parquet) == 2 * ROWS["volumetrics"] and set(parquet["subject_ref"]) == {"sub-0003"}


def test_an_export_reads_only_the_attributes_its_rows_need(cohort_cloud: LocalCloud):
    first_two: dict[str, Any] = {"status": None, "since": None, "until": None, "limit": 2, "start_key": None}
    page = DynamoStudyStore().tenant_studies("lab-b", **first_two, attributes=ROW_ATTRIBUTES)
    study = page.items[0]
    assert study.summary and study.subject and study.analysis_versions and study.updated_at
    assert study.analyses == [] and study.priority == "normal"  # not read: the fields' defaults
    full = DynamoStudyStore().tenant_studies(
        "lab-b", status=None, since=None, until=None, limit=2, start_key=None
    )
    assert full.items[0].analyses == list(VERSIONS) and page.next_key == full.next_key
