"""The hospital path, both ways: a PACS (Orthanc) sends an exam by C-STORE; voxelpipe routes it,
segments the T1, writes SEG, SR and the PDF report as DICOM, and files them back — re-identified
into the original exam of the hospital's own PACS (internal), de-identified to a research archive
(external); one by STOW-RS and the other by C-STORE, then the other way round. Then the planted
identifiers are searched for everywhere in the local cloud: only the identity map may hold them
(docs/dicom.md, docs/deliveries.md)."""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Iterator
from typing import Any

import pydicom
import pytest
from fastapi.testclient import TestClient

from infra.local.cloud import LocalCloud
from infra.local.dicom_receiver import receiving_dicom
from infra.local.processes import ProcessSettings
from infra.local.serve import acting_as
from infra.local.studies import wait_for_terminal
from tests.fixtures.cloud import checked_cloud
from tests.fixtures.exams import make_exam
from tests.fixtures.orthanc import OrthancClient, orthanc_server
from tests.fixtures.phi_scan import sightings
from voxelpipe.adapters import secrets
from voxelpipe.adapters.rule_sets import DynamoRuleSets
from voxelpipe.api.app import create_app
from voxelpipe.api.auth import Role, mint_dev_token
from voxelpipe.dimse.settings import AeTitle
from voxelpipe.function_specs import API
from voxelpipe.observability import logger as function_logger
from voxelpipe.pipeline.receive import exam_study_id
from voxelpipe.routing import DEFAULT_RULE_SET, RuleSet
from voxelpipe.status import StudyStatus
from voxelpipe.wiring import EnvVar

TENANT = "hospital-b"
AE_TITLE = "VOXELPIPE"


def _admin() -> dict[str, str]:
    return {"authorization": f"Bearer {mint_dev_token(TENANT, Role.ADMIN)}"}


@pytest.fixture
def cloud(template: dict[str, Any]) -> Iterator[LocalCloud]:
    """Every function in this process (no worker processes), so that `function_logs` sees every
    line any of them logs."""
    with checked_cloud(template, processes=ProcessSettings(processes=0)) as local:
        yield local


@pytest.fixture
def function_logs() -> Iterator[io.StringIO]:
    """What the functions log, every level, formatted as in Lambda (the message and its extras)."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(function_logger.registered_formatter)
    level = function_logger.log_level
    function_logger.addHandler(handler)
    function_logger.setLevel(logging.DEBUG)
    try:
        yield stream
    finally:
        function_logger.removeHandler(handler)
        function_logger.setLevel(level)


@pytest.fixture
def hospital(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OrthancClient]:
    with orthanc_server(tmp_path_factory.mktemp("hospital-pacs")) as client:
        yield client


@pytest.fixture
def archive(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OrthancClient]:
    with orthanc_server(tmp_path_factory.mktemp("research-archive")) as client:
        yield client


@pytest.fixture
def api(cloud: LocalCloud, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    monkeypatch.setenv(EnvVar.AUTH_MODE, "dev")
    with TestClient(acting_as(cloud, API.name, create_app())) as client:
        yield client


def _rules() -> RuleSet:
    """The default rules, but a 3D T1 is segmented and its outputs go to both destinations."""
    rules = []
    for rule in DEFAULT_RULE_SET.rules:
        if rule.name == "3d-t1":
            action = rule.action.model_copy(
                update={"analyses": ["qc", "tissue-seg", "volumetrics"], "destinations": ["pacs", "archive"]}
            )
            rule = rule.model_copy(update={"action": action})
        rules.append(rule)
    return RuleSet(rules=rules, quiet_period_seconds=1)


def _deliveries(api: TestClient, study_id: str, timeout_s: float = 120) -> dict[str, Any]:
    """The study's deliveries by destination once none is pending."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        response = api.get(f"/studies/{study_id}/deliveries", headers=_admin())
        assert response.status_code == 200, response.text
        items = {item["destination"]: item for item in response.json()["items"]}
        if len(items) == 2 and all(item["status"] != "PENDING" for item in items.values()):
            return items
        time.sleep(0.3)
    raise AssertionError(f"the deliveries of {study_id} did not end within {timeout_s} s")


def _series(orthanc: OrthancClient, study_uid: str) -> list[dict[str, Any]]:
    response = orthanc.http.get(
        f"/dicom-web/studies/{study_uid}/series", headers={"Accept": "application/dicom+json"}
    )
    response.raise_for_status()
    found: list[dict[str, Any]] = response.json()
    return found


def _value(item: dict[str, Any], tag: str) -> Any:
    values = item.get(tag, {}).get("Value") or [None]
    return values[0]


def _destination(kind: str, orthanc: OrthancClient) -> dict[str, Any]:
    if kind == "dicomweb":
        return {"kind": "dicomweb", "url": f"{orthanc.url}/dicom-web/studies"}
    return {"kind": "dimse", "host": "127.0.0.1", "port": orthanc.dicom_port, "called_ae": "ORTHANC"}


@pytest.mark.parametrize(("internal_by", "external_by"), [("dicomweb", "dimse"), ("dimse", "dicomweb")])
def test_an_exam_from_the_pacs_comes_back_as_seg_sr_and_pdf_re_identified_only_for_the_pacs(
    internal_by: str,
    external_by: str,
    cloud: LocalCloud,
    api: TestClient,
    hospital: OrthancClient,
    archive: OrthancClient,
    function_logs: io.StringIO,
):
    DynamoRuleSets().save(TENANT, _rules(), actor="test")
    pacs = {**_destination(internal_by, hospital), "name": "pacs", "internal": True}
    research = {**_destination(external_by, archive), "name": "archive"}
    for destination in (pacs, research):
        created = api.post("/destinations", json=destination, headers=_admin())
        assert created.status_code == 201, created.text

    exam = make_exam(t1_slices=12)
    original = pydicom.dcmread(io.BytesIO(exam.t1.instances[0]))
    planted = [original.PatientID, str(original.PatientName), original.AccessionNumber, exam.study_uid]
    with receiving_dicom(cloud, {AE_TITLE: AeTitle(TENANT)}) as port:
        hospital.add_modality("voxelpipe", AE_TITLE, "127.0.0.1", port)
        ids = {hospital.upload(data)["ParentStudy"] for data in exam.instances}
        hospital.store("voxelpipe", sorted(ids))
        study_id = exam_study_id(secrets.pseudonyms(), TENANT, exam.study_uid)
        record = wait_for_terminal([study_id], timeout_s=180)[study_id]
    assert record is not None and record.status == StudyStatus.COMPLETED, (record.reason_detail, record.error)

    deliveries = _deliveries(api, study_id)
    assert {name: item["status"] for name, item in deliveries.items()} == {
        "pacs": "DELIVERED",
        "archive": "DELIVERED",
    }, deliveries

    # The hospital's PACS files SEG, SR and the PDF into the original exam, beside its MR series.
    filed = _series(hospital, exam.study_uid)
    modalities = sorted(str(_value(series, "00080060")) for series in filed)
    assert modalities.count("MR") == 3 and {"SEG", "SR", "DOC"} <= set(modalities), modalities
    (study,) = hospital.qido_studies(StudyInstanceUID=exam.study_uid)
    assert _value(study, "00100020") == original.PatientID

    # The research archive got the same outputs, de-identified: no original identifier.
    assert archive.qido_studies(StudyInstanceUID=exam.study_uid) == []
    (anonymous,) = archive.qido_studies()
    assert _value(anonymous, "0020000D") != exam.study_uid
    assert _value(anonymous, "00100020") != original.PatientID
    assert {
        str(_value(series, "00080060")) for series in _series(archive, _value(anonymous, "0020000D"))
    } == {
        "SEG",
        "SR",
        "DOC",
    }

    # Nowhere in the local cloud but the identity map: no object, no other table's item, no log.
    logs = function_logs.getvalue()
    found = sightings(
        planted, buckets=[cloud.bucket], logs=logs, except_tables=[cloud.env(EnvVar.IDENTITY_MAP_TABLE)]
    )
    assert found == [], found
    assert study_id in logs  # the search sees the functions' logs (and would see a planted value)
    assert not cloud.iam.denials
