"""An exam sent in over DICOMweb (STOW-RS) is routed, processed and found again (QIDO-RS), and its
de-identified copies retrieved (WADO-RS). Tiny images (tests/fixtures/exams.py), `qc` only.
(`voxelpipe upload` of a DICOM folder: tests/e2e/test_serve.py.)"""

from __future__ import annotations

import io
import time
from collections.abc import Callable, Iterator
from typing import Any

import pydicom
import pytest
from fastapi.testclient import TestClient

from infra.local.cloud import LocalCloud
from infra.local.serve import acting_as
from infra.local.studies import wait_for_terminal
from tests.fixtures.exams import make_exam
from voxelpipe.adapters.rule_sets import DynamoRuleSets
from voxelpipe.api.app import create_app
from voxelpipe.api.auth import Role, mint_dev_token
from voxelpipe.dicom.web import multipart_related, parse_multipart_related
from voxelpipe.function_specs import API
from voxelpipe.routing import Condition, RoutingAction, RoutingRule, RuleSet
from voxelpipe.wiring import EnvVar

TENANT = "lab-a"


@pytest.fixture
def api(cloud: LocalCloud, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    monkeypatch.setenv(EnvVar.AUTH_MODE, "dev")
    with TestClient(acting_as(cloud, API.name, create_app())) as client:
        yield client


def auth(role: Role = Role.UPLOADER, **headers: str) -> dict[str, str]:
    return {"authorization": f"Bearer {mint_dev_token(TENANT, role)}", **headers}


def _value(item: dict[str, Any], tag: str) -> Any:
    return item[tag]["Value"][0] if tag in item else None


def _poll(fetch: Callable[[], Any], timeout_s: float = 300) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        found = fetch()
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.5)


def test_a_stowed_exam_is_routed_found_through_qido_and_retrieved_through_wado(
    api: TestClient, cloud: LocalCloud
):
    # The tenant's rules: a T1 gets qc; nothing else matches. No quiet period: the request's end completes it.
    t1_rule = RoutingRule(
        name="t1-qc",
        condition=Condition.model_validate({"field": "SeriesClass", "equals": "T1"}),
        action=RoutingAction(kind="process", analyses=["qc"]),
    )
    DynamoRuleSets().save(TENANT, RuleSet(rules=[t1_rule], quiet_period_seconds=0), actor="test")
    exam = make_exam()
    body, content_type = multipart_related([(part, "application/dicom") for part in exam.instances])
    stored = api.post("/dicomweb/studies", content=body, headers=auth(**{"content-type": content_type}))
    assert stored.status_code == 200, stored.text
    study_uid = _value(stored.json(), "00081190").rsplit("/", 1)[1]

    def decided() -> list[dict[str, Any]]:
        studies = api.get(
            "/dicomweb/studies", params={"StudyInstanceUID": study_uid}, headers=auth(Role.VIEWER)
        )
        return list(studies.json())

    [study] = _poll(decided)
    assert study["00080061"]["Value"] == ["MR"] and _value(study, "00201208") == len(exam.instances)
    series = api.get(f"/dicomweb/studies/{study_uid}/series", headers=auth(Role.VIEWER)).json()
    by_class = {_value(s, "00111004"): s for s in series}
    assert set(by_class) == {"T1", "LOCALIZER", "FLAIR"}
    assert _value(by_class["T1"], "00111002") == "YES" and _value(by_class["T1"], "00111003") == "t1-qc"
    for other in ("LOCALIZER", "FLAIR"):  # no rule of the tenant's matched them
        assert _value(by_class[other], "00111002") == "NO" and _value(by_class[other], "00111001") is None
    study_id = _value(by_class["T1"], "00111001")
    mr = api.get("/dicomweb/series", params={"Modality": "MR"}, headers=auth(Role.VIEWER)).json()
    assert {_value(s, "0020000E") for s in mr} >= {_value(s, "0020000E") for s in series}

    assert wait_for_terminal([study_id], timeout_s=300)[study_id].status == "COMPLETED"
    t1_uid = _value(by_class["T1"], "0020000E")
    # The STOW-RS response's RetrieveURL of a T1 instance is where WADO-RS serves it, once processed.
    urls = [_value(item, "00081190") for item in stored.json()["00081199"]["Value"]]
    url = next(url for url in urls if f"/series/{t1_uid}/instances/" in url)
    sop = url.rsplit("/", 1)[1]
    instance = api.get(url.removeprefix(str(api.base_url)), headers=auth(Role.VIEWER))
    assert instance.status_code == 200, instance.text
    [part] = parse_multipart_related(instance.headers["content-type"], instance.content)
    copy = pydicom.dcmread(io.BytesIO(part.data))
    assert (copy.StudyInstanceUID, copy.SeriesInstanceUID, copy.SOPInstanceUID) == (study_uid, t1_uid, sop)
    assert copy.PatientName != "Doe^Jane^Q" and "Doe" not in str(copy.get("InstitutionName", ""))
    assert copy.PatientIdentityRemoved == "YES"
