"""A subject over time through the whole local cloud: two NIfTI studies of one subject a year apart,
the second shrunk by a known smooth deformation, get `longitudinal` without asking, the prior
pinned; a third study with no subject does not. The timeline (API, CLI's text, report, viewer's
subject page in headless Chromium) shows the measured rate, and its z-score against a registered
rates table.

One cloud for the module (the studies are the slow part: three tissue-segs of the bundled brain
at 2 mm, the second and third at once).
"""

from __future__ import annotations

import gzip
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import boto3
import nibabel as nib
import numpy as np
import pytest
from fastapi.testclient import TestClient
from scipy import ndimage

from infra.cli.remote import describe_timeline
from infra.local.cloud import LocalCloud
from infra.local.serve import acting_as
from infra.local.studies import wait_for_terminal
from tests.fixtures.cloud import checked_cloud
from tests.fixtures.scans import mni152_at_2mm
from voxelpipe.adapters.study_table import DynamoStudyStore
from voxelpipe.api.app import create_app
from voxelpipe.api.auth import Role, mint_dev_token
from voxelpipe.function_specs import API
from voxelpipe.keys import report_html_key, results_key
from voxelpipe.status import StudyStatus
from voxelpipe.viewer.assets import niivue_missing
from voxelpipe.wiring import EnvVar

STORE = DynamoStudyStore()
SUBJECT = "sub-long"
# The follow-up: the baseline scaled by SCALE per axis about the volume's centre (a smooth
# deformation), so every structure, the whole brain included, has SCALE**3 of its volume: -2 %.
SCALE = 0.98 ** (1 / 3)
KNOWN_CHANGE_PCT = -2.0
SCAN_DATES = ("2024-03-01", "2025-03-01")  # 365 days: 0.9993 years of 365.25 days
# A rates table for the test only: the numbers are made up, and its source says so.
RATES_CSV = (
    "measure,age_min,age_max,mean_pct_per_year,sd_pct_per_year,source\n"
    'brain,60,80,-0.5,0.4,"made up for voxelpipe\'s e2e test; not a reference"\n'
)
CHROMIUM = Path(os.environ.get("VOXELPIPE_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = ["--use-angle=swiftshader", "--enable-unsafe-swiftshader", "--ignore-gpu-blocklist"]


def _auth(role: Role) -> dict[str, str]:
    return {"authorization": f"Bearer {mint_dev_token('lab-a', role)}"}


def _shrunk(scan: bytes) -> bytes:
    image = nib.Nifti1Image.from_bytes(gzip.decompress(scan))
    data = np.asarray(image.dataobj, dtype=np.float32)
    centre = (np.asarray(data.shape) - 1) / 2

    # affine_transform maps each output voxel o to the input voxel centre + (o - centre) / SCALE.
    def warp(values: np.ndarray) -> np.ndarray:
        return ndimage.affine_transform(
            values, np.full(3, 1 / SCALE), offset=centre - centre / SCALE, order=1
        )

    # The brain is skull-stripped on a zero background: the background stays exactly zero (linear
    # interpolation alone would spread the brain's edge by a voxel).
    moved = np.where(warp((data > 0).astype(np.float32)) >= 0.5, warp(data), 0.0).astype(np.float32)
    return gzip.compress(nib.Nifti1Image(moved, image.affine).to_bytes(), compresslevel=1)


@dataclass
class Subject:
    cloud: LocalCloud
    api: TestClient
    baseline: str
    followup: str
    unrelated: str


def _register(api: TestClient, content: bytes, subject: dict[str, Any] | None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "files": [{"name": "t1w.nii.gz", "size": len(content)}],
        "analyses": ["tissue-seg"],
    }
    body.update(subject or {})
    created = api.post("/studies", json=body, headers=_auth(Role.UPLOADER))
    assert created.status_code == 201, created.text
    return created.json()


def _upload(cloud: LocalCloud, created: dict[str, Any], content: bytes) -> None:
    boto3.client("s3").put_object(Bucket=cloud.bucket, Key=created["uploads"][0]["key"], Body=content)


@pytest.fixture(scope="module")
def subject(template: dict[str, Any]) -> Iterator[Subject]:
    baseline_scan = mni152_at_2mm()
    followup_scan = _shrunk(baseline_scan)
    person = {"subject_ref": SUBJECT, "age": 70, "sex": "F"}
    with (
        pytest.MonkeyPatch.context() as patch,
        checked_cloud(template) as cloud,
    ):
        patch.setenv(EnvVar.AUTH_MODE, "dev")
        with TestClient(acting_as(cloud, API.name, create_app())) as api:
            # Each upload declares its real scan date; only the subject's shifted one is stored.
            first = _register(api, baseline_scan, {**person, "scan_date": SCAN_DATES[0]})
            _upload(cloud, first, baseline_scan)
            done = wait_for_terminal([first["study_id"]], timeout_s=300)[first["study_id"]]
            assert done is not None and done.status == StudyStatus.COMPLETED, done and done.error
            second = _register(api, followup_scan, {**person, "scan_date": SCAN_DATES[1]})
            third = _register(api, followup_scan, None)
            _upload(cloud, second, followup_scan)
            _upload(cloud, third, followup_scan)
            ids = [second["study_id"], third["study_id"]]
            for study_id, record in wait_for_terminal(ids, timeout_s=300).items():
                assert record is not None and record.status == StudyStatus.COMPLETED, (study_id, record)
            yield Subject(cloud, api, first["study_id"], second["study_id"], third["study_id"])


def _results(cloud: LocalCloud, study_id: str) -> dict[str, Any]:
    body = boto3.client("s3").get_object(Bucket=cloud.bucket, Key=results_key(study_id))["Body"].read()
    return dict(json.loads(body))


def test_the_later_study_of_a_subject_is_compared_with_the_earlier_and_one_without_a_subject_is_not(
    subject: Subject,
):
    followup = _results(subject.cloud, subject.followup)
    assert set(followup["analyses"]) == {"tissue-seg", "longitudinal"}
    measures = followup["analyses"]["longitudinal"]["measures"]
    assert measures["prior_study_id"] == subject.baseline
    assert measures["interval_years"] == pytest.approx(365 / 365.25, abs=1e-6)
    brain = measures["regions"]["brain"]
    # The known change is -2 %: the sign and rough size (the method's accuracy is M's bench's).
    assert -4.0 < brain["paired_change_pct"] < -0.5, brain
    assert brain["paired_rate_pct_per_year"] == pytest.approx(
        brain["paired_change_pct"] / measures["interval_years"]
    )
    (added,) = [row for row in STORE.audit_trail(subject.followup) if row.action == "longitudinal_added"]
    assert added.detail == {
        "study_id": subject.baseline,
        "attempt": 1,
        "interval_years": measures["interval_years"],
    }
    assert set(_results(subject.cloud, subject.baseline)["analyses"]) == {"tissue-seg"}
    assert set(_results(subject.cloud, subject.unrelated)["analyses"]) == {"tissue-seg"}
    report = boto3.client("s3").get_object(Bucket=subject.cloud.bucket, Key=report_html_key(subject.followup))
    page = report["Body"].read().decode()
    assert f"Over time (subject {SUBJECT})" in page and 'alt="timeline chart"' in page


def _register_rates(subject: Subject) -> None:
    import hashlib

    data = RATES_CSV.encode()
    operator = _auth(Role.OPERATOR)
    body = {
        "name": "test-rates",
        "licence": "test data",
        "citation": "none: made up for a test",
        "commercial_use": False,
        "scope": "deployment",
        "files": [{"role": "table", "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}],
    }
    created = subject.api.post("/references/rates", json=body, headers=operator)
    assert created.status_code == 201, created.text
    key = created.json()["uploads"]["table"]["key"]
    boto3.client("s3").put_object(Bucket=subject.cloud.bucket, Key=key, Body=data)
    done = subject.api.post(
        "/references/rates/test-rates/complete", json={"scope": "deployment"}, headers=operator
    )
    assert done.status_code == 200 and done.json()["status"] == "READY", done.text


def test_the_timeline_shows_the_rate_and_its_z_score_against_a_registered_rates_table(subject: Subject):
    _register_rates(subject)
    reader = _auth(Role.VIEWER)
    answer = subject.api.get(f"/subjects/{SUBJECT}/timeline?rates=test-rates", headers=reader)
    assert answer.status_code == 200, answer.text
    timeline = answer.json()
    assert [s["study_id"] for s in timeline["studies"]] == [subject.baseline, subject.followup]
    first, second = timeline["studies"]
    shifted = [date.fromisoformat(first["scan_date"]), date.fromisoformat(second["scan_date"])]
    assert shifted[1] - shifted[0] == date.fromisoformat(SCAN_DATES[1]) - date.fromisoformat(SCAN_DATES[0])
    assert not {first["scan_date"], second["scan_date"]} & set(SCAN_DATES)
    assert second["years_since_first"] == pytest.approx(365 / 365.25, abs=1e-6)
    assert first["change_from_prior"] is None
    measured = _results(subject.cloud, subject.followup)["analyses"]["longitudinal"]["measures"]
    brain = second["change_from_prior"]["regions"]["brain"]
    rate = measured["regions"]["brain"]["paired_rate_pct_per_year"]
    assert brain["paired_rate_pct_per_year"] == rate
    assert brain["rate_z"]["status"] == "ok" and brain["rate_z"]["z"] == pytest.approx((rate + 0.5) / 0.4)
    span = timeline["first_to_last"]
    assert (span["first_study_id"], span["last_study_id"], span["pairs"]) == (
        subject.baseline,
        subject.followup,
        1,
    )
    assert span["regions"]["brain"]["paired_rate_pct_per_year"] == pytest.approx(rate)
    assert timeline["rates_reference"]["name"] == "test-rates" and timeline["rates_reference"]["version"] == 1
    assert "brain" in describe_timeline(timeline) and f"{rate:+.2f} %/y" in describe_timeline(timeline)
    # Without rates, no z; an unknown table, a version without a name, an unknown subject.
    plain = subject.api.get(f"/subjects/{SUBJECT}/timeline", headers=reader).json()
    assert (
        plain["rates_reference"] is None
        and "rate_z" not in plain["studies"][1]["change_from_prior"]["regions"]["brain"]
    )
    unknown = subject.api.get(f"/subjects/{SUBJECT}/timeline?rates=nope", headers=reader)
    assert unknown.status_code == 422 and unknown.json()["errors"][0]["field"] == "rates"
    orphan = subject.api.get(f"/subjects/{SUBJECT}/timeline?rates_version=1", headers=reader)
    assert orphan.status_code == 422
    missing = subject.api.get("/subjects/sub-nobody/timeline", headers=reader)
    assert missing.status_code == 404 and missing.json()["code"] == "subject_not_found"
    other_tenant = {"authorization": f"Bearer {mint_dev_token('lab-b', Role.VIEWER)}"}
    assert subject.api.get(f"/subjects/{SUBJECT}/timeline", headers=other_tenant).status_code == 404


@pytest.mark.skipif(not CHROMIUM.exists(), reason=f"no Chromium at {CHROMIUM} (VOXELPIPE_CHROMIUM)")
@pytest.mark.skipif(niivue_missing() is not None, reason=niivue_missing() or "")
def test_the_viewers_subject_page_draws_the_timeline_chart(subject: Subject):
    playwright_api = pytest.importorskip("playwright.sync_api")
    link = subject.api.post(f"/subjects/{SUBJECT}/viewer-link", headers=_auth(Role.VIEWER))
    assert link.status_code == 200, link.text
    url = link.json()["url"]
    origin = "{0.scheme}://{0.netloc}".format(urlparse(url))
    s3 = boto3.client("s3")

    def answer(route: Any) -> None:
        """The page's requests answered in process: the API app (TestClient), the volumes from the
        local bucket (presigned URLs name it)."""
        request = route.request
        parsed = urlparse(request.url)
        if request.url.startswith(origin):
            response = subject.api.request(
                request.method, request.url.removeprefix(origin), headers=dict(request.headers)
            )
            route.fulfill(status=response.status_code, headers=dict(response.headers), body=response.content)
        elif parsed.hostname and parsed.hostname.startswith(subject.cloud.bucket):
            body = s3.get_object(Bucket=subject.cloud.bucket, Key=unquote(parsed.path.lstrip("/")))[
                "Body"
            ].read()
            route.fulfill(status=200, headers={"access-control-allow-origin": "*"}, body=body)
        else:
            route.abort()

    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 960, "height": 640})
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.route("**/*", answer)
            page.goto(url)
            page.wait_for_selector("svg[data-timeline-chart]", timeout=60_000)
            points = page.eval_on_selector_all(
                'svg[data-timeline-chart] circle[data-region="brain"][data-field="paired_change_pct"]',
                "ns => ns.map(n => [n.dataset.study, Number(n.dataset.years), Number(n.dataset.change)])",
            )
            rows = page.eval_on_selector_all("#timeline-table tbody tr", "rows => rows.map(r => r.innerText)")
            assert not errors, errors
        finally:
            browser.close()
    measured = _results(subject.cloud, subject.followup)["analyses"]["longitudinal"]["measures"]
    change = measured["regions"]["brain"]["paired_change_pct"]
    assert points == [
        [subject.baseline, 0.0, 0.0],
        [subject.followup, pytest.approx(365 / 365.25, abs=1e-5), pytest.approx(change)],
    ]
    followup = STORE.get_study(subject.followup)
    assert followup is not None and followup.scan_date is not None
    assert len(rows) == 2 and followup.scan_date in rows[1] and "%/y" in rows[1]
