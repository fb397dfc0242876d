"""Subjects over time through the whole local cloud: two exams of one patient, one uploaded and one
sent by STOW-RS, land on one pseudonymous subject; every date is shifted by the subject's offset, so
the interval between the scans is exact and no original date is left anywhere (docs/subjects.md)."""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from datetime import date

import boto3
import pydicom
import pytest
from fastapi.testclient import TestClient
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from infra.local.cloud import LocalCloud
from infra.local.serve import acting_as
from infra.local.studies import DEMO_TENANT, submit_files, wait_for_terminal
from tests.fixtures.dicom import SyntheticSeries, make_series
from tests.fixtures.phi_scan import sightings
from voxelpipe.adapters import secrets
from voxelpipe.adapters.rule_sets import DynamoRuleSets
from voxelpipe.adapters.study_table import DynamoStudyStore
from voxelpipe.api.app import create_app
from voxelpipe.api.auth import Role, mint_dev_token
from voxelpipe.dicom.web import multipart_related
from voxelpipe.function_specs import API
from voxelpipe.pipeline.receive import exam_study_id
from voxelpipe.routing import Condition, RoutingAction, RoutingRule, RuleSet
from voxelpipe.status import StudyStatus
from voxelpipe.wiring import EnvVar

BIRTH = date(1958, 7, 23)
SCANS = (date(2019, 3, 14), date(2021, 9, 2))  # the first uploaded, the second sent by STOW-RS


def _compact(d: date) -> str:
    return d.strftime("%Y%m%d")


def _planted(scan: date):
    """Dates everywhere a scanner puts them: the study/series/acquisition/content/creation dates, a
    DT with time and UTC offset, a multi-valued date, dates nested two sequences deep, a date the
    Basic Profile keeps, and the birth date."""

    def edit(k: int, ds: Dataset) -> None:
        day = _compact(scan)
        for keyword in ("StudyDate", "SeriesDate", "AcquisitionDate", "ContentDate", "InstanceCreationDate"):
            setattr(ds, keyword, day)
        ds.AcquisitionDateTime = f"{day}101112.250000+0100"
        ds.PatientBirthDate = _compact(BIRTH)
        ds.PatientAge = ""  # the age comes from the birth date and the study date
        ds.DateOfLastCalibration = [day, _compact(date(scan.year - 1, 12, 30))]
        frame = Dataset()
        frame.FrameAcquisitionDateTime = f"{day}101112"
        frame.ContentDate = day
        group = Dataset()
        group.FrameContentSequence = Sequence([frame])
        ds.SharedFunctionalGroupsSequence = Sequence([group])
        ds.add_new(0x00143076, "DA", day)  # Date of Gain Calibration: kept by the Basic Profile

    return edit


def _series(scan: date, seed: int) -> SyntheticSeries:
    return make_series(n_slices=5, rows=16, cols=16, seed=seed, edit=_planted(scan))


@pytest.fixture
def api(cloud: LocalCloud, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    monkeypatch.setenv(EnvVar.AUTH_MODE, "dev")
    with TestClient(acting_as(cloud, API.name, create_app())) as client:
        yield client


def _auth(role: Role = Role.UPLOADER, **headers: str) -> dict[str, str]:
    return {"authorization": f"Bearer {mint_dev_token(DEMO_TENANT, role)}", **headers}


def test_two_exams_of_a_patient_keep_their_interval_and_no_original_date(cloud: LocalCloud, api: TestClient):
    # The STOW-RS exam: processed as soon as its request ends (no quiet period), qc only.
    process = RoutingRule(
        name="all-qc",
        condition=Condition.model_validate({"field": "Modality", "equals": "MR"}),
        action=RoutingAction(kind="process", analyses=["qc"]),
    )
    DynamoRuleSets().save(DEMO_TENANT, RuleSet(rules=[process], quiet_period_seconds=0), actor="test")
    first, second = _series(SCANS[0], 1), _series(SCANS[1], 2)
    uploaded = submit_files(
        cloud,
        [(f"im{n}.dcm", data) for n, data in enumerate(first.instances)],
        input_format="dicom",
        analyses=["qc"],
    )
    body, content_type = multipart_related([(data, "application/dicom") for data in second.instances])
    stored = api.post("/dicomweb/studies", content=body, headers=_auth(**{"content-type": content_type}))
    assert stored.status_code == 200, stored.text
    stowed = DynamoStudyStore().get_study(exam_study_id(secrets.pseudonyms(), DEMO_TENANT, second.study_uid))
    assert stowed is not None
    done = wait_for_terminal([uploaded, stowed.study_id], timeout_s=240)
    for record in done.values():
        assert record.status == StudyStatus.COMPLETED, (record.reason_detail, record.error)

    # One subject, derived from the Patient ID: the same for the upload and the network exam.
    refs = {(r.subject or {}).get("subject_ref") for r in done.values()}
    assert len(refs) == 1 and None not in refs
    (ref,) = refs
    assert re.fullmatch(r"sub-[0-9a-f]{24}", ref)
    scan_dates = [date.fromisoformat(done[s].scan_date or "") for s in (uploaded, stowed.study_id)]
    assert scan_dates[1] - scan_dates[0] == SCANS[1] - SCANS[0]  # exact, to the day
    assert scan_dates[0] != SCANS[0]
    # Age from the birth date at each scan; the birth date itself is kept nowhere.
    assert [done[s].subject["age"] for s in (uploaded, stowed.study_id)] == [60.0, 63.0]  # type: ignore[index]

    subject = api.get(f"/subjects/{ref}", headers=_auth(Role.VIEWER))
    assert subject.status_code == 200, subject.text
    assert [s["study_id"] for s in subject.json()["studies"]] == [uploaded, stowed.study_id]
    responses = [
        subject.text,
        api.get("/subjects", headers=_auth(Role.VIEWER)).text,
        *(api.get(f"/studies/{s}", headers=_auth(Role.VIEWER)).text for s in done),
        *(api.get(f"/studies/{s}/results", headers=_auth(Role.VIEWER)).text for s in done),
    ]

    # The de-identified copies (not Finalize's outputs beside them): every date shifted, said so.
    s3 = boto3.client("s3")
    listing = s3.list_objects_v2(Bucket=cloud.bucket, Prefix=f"derived/{uploaded}/dicom/")["Contents"]
    objects = [
        pydicom.dcmread(io.BytesIO(s3.get_object(Bucket=cloud.bucket, Key=item["Key"])["Body"].read()))
        for item in listing
    ]
    copies = [ds for ds in objects if ds.get("Manufacturer") != "voxelpipe"]
    assert len(copies) == len(first.instances)
    for copy in copies:
        assert copy.PatientID == ref and copy.StudyDate == _compact(scan_dates[0])
        assert copy.LongitudinalTemporalInformationModified == "MODIFIED"
        assert [c.CodeValue for c in copy.DeidentificationMethodCodeSequence] == ["113100", "113107"]

    originals = [
        text
        for d in (*SCANS, BIRTH, date(SCANS[0].year - 1, 12, 30), date(SCANS[1].year - 1, 12, 30))
        for text in (_compact(d), d.isoformat())
    ]
    # Nowhere: no object version, no item of any table (the honest broker's identity map excepted:
    # it keeps the original Study Date for re-identification at egress, docs/dicom.md), no answer.
    identity_table = cloud.env(EnvVar.IDENTITY_MAP_TABLE)
    found = sightings(originals, buckets=[cloud.bucket], except_tables=[identity_table])
    assert [f"{hit.where}: {hit.marker}" for hit in found] == []
    # The scan can see them: the identity map holds the originals' Study Date and Birth Date.
    kept = sightings(originals, buckets=[], except_tables=[])
    assert {hit.where for hit in kept} == {f"dynamodb:{identity_table}"}
    assert {hit.marker for hit in kept} >= {_compact(SCANS[0]), _compact(SCANS[1]), _compact(BIRTH)}
    assert [d for d in originals for text in responses if d in text] == []
