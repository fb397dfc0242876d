"""A hospital PACS sends an exam over DIMSE: Orthanc (Debian's) -> our C-STORE receiver -> the local cloud.

The exam is built with pydicom: a 3D T1 (MPRAGE-like: GR/IR, 3D, TR 2000, TE 3, TI 900 ms), a
localizer and a 2D FLAIR, small images. Orthanc holds it and sends it to the receiver (`POST
/modalities/{name}/store`); the receiver runs as in `voxelpipe serve --dicom-port`, acting as the
Fargate task's role. The tenant's rule set is the default one with a short quiet period (the
default rules pick `qc`, the default analyses, for a 3D T1: a light run).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from pydicom.dataset import Dataset

from infra.local.cloud import LocalCloud
from infra.local.dicom_receiver import receiving_dicom
from infra.local.studies import wait_for_terminal
from tests.fixtures.dicom import make_series
from tests.fixtures.orthanc import OrthancClient, orthanc_server
from voxelpipe.adapters import secrets
from voxelpipe.adapters.rule_sets import DynamoRuleSets
from voxelpipe.adapters.study_table import DynamoStudyStore
from voxelpipe.analyses import DEFAULT_ANALYSES
from voxelpipe.api.views import study_view
from voxelpipe.dimse.settings import AeTitle
from voxelpipe.pipeline.attempts import ended_attempts
from voxelpipe.pipeline.receive import exam_study_id
from voxelpipe.routing.rules import DEFAULT_RULE_SET, RuleSet
from voxelpipe.status import StudyStatus

TENANT = "hospital-a"
AE_TITLE = "VOXELPIPE"
MODALITY = "voxelpipe"
STORE = DynamoStudyStore()


def _mr(
    *,
    description: str,
    scanning: list[str],
    acquisition: str,
    tr: float,
    te: float,
    ti: float | None,
    image_type: list[str] | None = None,
    number: int,
) -> Any:
    def edit(index: int, ds: Dataset) -> None:
        ds.Modality = "MR"
        ds.SeriesDescription = description
        ds.ProtocolName = description
        ds.SeriesNumber = number
        ds.ScanningSequence = scanning
        ds.SequenceVariant = ["SP", "MP"]
        ds.MRAcquisitionType = acquisition
        ds.RepetitionTime = tr
        ds.EchoTime = te
        if ti is not None:
            ds.InversionTime = ti
        if image_type is not None:
            ds.ImageType = image_type

    return edit


def exam(study_uid: str) -> dict[str, list[bytes]]:
    """The exam's series by name, each a list of Part 10 files (shared Study Instance UID)."""
    t1 = make_series(
        20,
        32,
        32,
        slice_spacing=1.0,
        pixel_spacing=(1.0, 1.0),
        study_uid=study_uid,
        seed=1,
        edit=_mr(
            description="t1_mprage", scanning=["GR", "IR"], acquisition="3D", tr=2000, te=3, ti=900, number=3
        ),
    )
    localizer = make_series(
        3,
        32,
        32,
        study_uid=study_uid,
        seed=2,
        edit=_mr(
            description="localizer",
            scanning=["GR"],
            acquisition="2D",
            tr=8.6,
            te=4,
            ti=None,
            image_type=["ORIGINAL", "PRIMARY", "LOCALIZER"],
            number=1,
        ),
    )
    flair = make_series(
        6,
        32,
        32,
        slice_spacing=5.0,
        study_uid=study_uid,
        seed=3,
        edit=_mr(
            description="t2_flair_tra",
            scanning=["SE", "IR"],
            acquisition="2D",
            tr=9000,
            te=100,
            ti=2500,
            number=4,
        ),
    )
    return {"t1": t1.instances, "localizer": localizer.instances, "flair": flair.instances}


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OrthancClient]:
    with orthanc_server(tmp_path_factory.mktemp("orthanc")) as client:
        yield client


@pytest.fixture
def receiver(cloud: LocalCloud, orthanc: OrthancClient) -> Iterator[int]:
    with receiving_dicom(cloud, {AE_TITLE: AeTitle(TENANT)}) as port:
        orthanc.add_modality(MODALITY, AE_TITLE, "127.0.0.1", port)
        yield port


def _use_default_rules(quiet_period_s: int) -> None:
    """The tenant's rule set: the default rules, with a quiet period short enough for a test."""
    DynamoRuleSets().save(
        TENANT, RuleSet(rules=DEFAULT_RULE_SET.rules, quiet_period_seconds=quiet_period_s), actor="test"
    )


def _load(orthanc: OrthancClient, instances: list[bytes]) -> str:
    """Upload a series to Orthanc; its Orthanc series id."""
    ids = {orthanc.upload(data)["ParentSeries"] for data in instances}
    (series,) = ids
    return series


def _series_by_class(view: Any) -> dict[str | None, Any]:
    return {series.series_class: series for series in view.series}


def test_orthanc_sends_an_exam_and_the_t1_is_processed_the_others_set_aside(
    cloud: LocalCloud, orthanc: OrthancClient, receiver: int
):
    _use_default_rules(quiet_period_s=1)
    study_uid = "1.2.826.0.1.3680043.8.498.7001"
    series = exam(study_uid)
    assert orthanc.echo(MODALITY)  # C-ECHO through Orthanc
    ids = [_load(orthanc, instances) for instances in series.values()]
    orthanc.store(MODALITY, ids)  # one association, the whole exam

    exam_id = exam_study_id(secrets.pseudonyms(), TENANT, study_uid)
    record = wait_for_terminal([exam_id], timeout_s=180)[exam_id]
    assert record is not None and record.status == StudyStatus.COMPLETED, record and record.reason_detail
    view = study_view(record, STORE, None)
    assert view.source == "c-store"
    assert sorted(view.analyses) == sorted(DEFAULT_ANALYSES)
    by_class = _series_by_class(view)
    assert set(by_class) == {"T1", "LOCALIZER", "FLAIR"}, [s.series_class for s in view.series]
    t1 = by_class["T1"]
    assert t1.decision.selected and t1.decision.rule == "3d-t1" and t1.instances == 20
    assert t1.study_id == exam_id
    localizer = by_class["LOCALIZER"]
    assert not localizer.decision.selected and localizer.decision.rule == "localizers-and-derived"
    assert localizer.decision.action == "discard" and localizer.decision.explanation
    flair = by_class["FLAIR"]
    assert not flair.decision.selected and flair.decision.rule is None and flair.decision.action == "none"
    assert flair.decision.explanation  # each rule, and why it did not match
    # Only one study: no other series was selected.
    assert [s.study_id for s in view.series if s.decision.selected] == [exam_id]
    # PHI never left the boundary: the decisions carry the pseudonymous UIDs.
    assert all(s.series_instance_uid != study_uid for s in view.series)

    # The processed series arrives again (a resend): a new attempt takes it, with nothing lost.
    orthanc.store(MODALITY, [ids[0]])
    again = _wait_for_attempt(exam_id, 2)
    assert again.status == StudyStatus.COMPLETED, again.reason_detail
    assert again.input is not None and again.input["instances"] == 20
    actions = [row.action for row in STORE.audit_trail(exam_id)]
    assert actions.count("instances_received") == 2 and "instances_after_end" in actions
    # Attempt 1 was kept: its record, and its outputs moved under attempts/1/ by attempt 2's Prepare.
    (first,) = ended_attempts(STORE, exam_id)
    assert first["attempt"] == 1 and first["status"] == StudyStatus.COMPLETED
    kept = boto3.client("s3").get_object(Bucket=cloud.bucket, Key=first["results_key"])["Body"].read()
    assert json.loads(kept)["attempt"] == 1
    assert not cloud.iam.denials


def _wait_for_attempt(study_id: str, attempt: int, timeout_s: float = 180) -> Any:
    """The study once its attempt `attempt` has ended."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        record = STORE.get_study(study_id)
        if record is not None and int(record.attempt) >= attempt and StudyStatus(record.status).is_terminal:
            return record
        time.sleep(0.2)
    raise AssertionError(f"attempt {attempt} of {study_id} did not end within {timeout_s} s")


def test_an_exam_over_two_associations_is_routed_once_both_are_in(
    cloud: LocalCloud, orthanc: OrthancClient, receiver: int
):
    # Long enough that the gap between the two associations (one REST call) never reaches it.
    _use_default_rules(quiet_period_s=5)
    study_uid = "1.2.826.0.1.3680043.8.498.7002"
    series = exam(study_uid)
    t1, flair = _load(orthanc, series["t1"]), _load(orthanc, series["flair"])
    exam_id = exam_study_id(secrets.pseudonyms(), TENANT, study_uid)

    orthanc.store(MODALITY, [t1])  # the first association, ended
    between = STORE.get_study(exam_id)
    assert between is not None and between.status == StudyStatus.AWAITING_UPLOAD
    orthanc.store(MODALITY, [flair])  # the second

    record = wait_for_terminal([exam_id], timeout_s=180)[exam_id]
    assert record is not None and record.status == StudyStatus.COMPLETED, record and record.reason_detail
    # Routed once, with both series in view: one attempt, both series' decisions recorded.
    assert int(record.attempt) == 1
    by_class = _series_by_class(study_view(record, STORE, None))
    assert set(by_class) == {"T1", "FLAIR"}
    assert by_class["T1"].decision.selected and not by_class["FLAIR"].decision.selected
    assert not cloud.iam.denials


def test_orthanc_qido_finds_what_it_holds(orthanc: OrthancClient) -> None:
    """The fixture's DICOMweb plugin answers QIDO-RS (for the STOW/QIDO tests that compare with it)."""
    study_uid = "1.2.826.0.1.3680043.8.498.7003"
    orthanc.upload(make_series(1, 16, 16, study_uid=study_uid).instances[0])
    found = orthanc.qido_studies(StudyInstanceUID=study_uid)
    assert [study["0020000D"]["Value"][0] for study in found] == [study_uid]
