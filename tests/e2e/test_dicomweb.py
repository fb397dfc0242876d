"""An exam sent in over DICOMweb (STOW-RS) is routed, processed and found again (QIDO-RS), and its
de-identified copies retrieved (WADO-RS); and `voxelpipe upload` of a DICOM folder reports what
the rules decided for each series. Tiny images (16 slices of 32 x 32), the `qc` analysis only."""

from __future__ import annotations

import io
import json
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
from fastapi.testclient import TestClient
from pydicom.dataset import Dataset

from infra.local.cloud import LocalCloud
from infra.local.serve import acting_as
from infra.local.studies import wait_for_terminal
from tests.fixtures.dicom import make_series
from tests.fixtures.serve import VOXELPIPE
from voxelpipe.adapters.rule_sets import DynamoRuleSets
from voxelpipe.api.app import create_app
from voxelpipe.api.auth import Role, mint_dev_token
from voxelpipe.dicom.web import multipart_related, parse_multipart_related
from voxelpipe.function_specs import API
from voxelpipe.routing import Condition, RoutingAction, RoutingRule, RuleSet
from voxelpipe.wiring import EnvVar

TENANT = "lab-a"
SLICES, SIZE = 16, 32


def _t1(k: int, ds: Dataset) -> None:
    """A 3D inversion-prepared gradient echo: classified T1."""
    ds.MRAcquisitionType = "3D"
    ds.ScanningSequence = ["GR", "IR"]
    ds.InversionTime = 900.0
    ds.SeriesNumber = 2


def _t2(k: int, ds: Dataset) -> None:
    """A 2D spin echo with long TR and TE: classified T2."""
    ds.MRAcquisitionType = "2D"
    ds.ScanningSequence = ["SE"]
    ds.RepetitionTime, ds.EchoTime = 4000.0, 90.0
    ds.SeriesDescription = "T2 AX"
    ds.SeriesNumber = 3


def _localizer(k: int, ds: Dataset) -> None:
    ds.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
    ds.SeriesDescription = "localizer"
    ds.SeriesNumber = 1


def exam(second: Callable[[int, Dataset], None]) -> tuple[list[bytes], list[bytes]]:
    t1 = make_series(SLICES, SIZE, SIZE, edit=_t1, seed=11)
    other = make_series(SLICES, SIZE, SIZE, edit=second, seed=12, study_uid=t1.study_uid, phi=False)
    return t1.instances, other.instances


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
    t1, t2 = exam(_t2)
    body, content_type = multipart_related([(part, "application/dicom") for part in t1 + t2])
    stored = api.post("/dicomweb/studies", content=body, headers=auth(**{"content-type": content_type}))
    assert stored.status_code == 200, stored.text
    study_uid = _value(stored.json(), "00081190").rsplit("/", 1)[1]

    def decided() -> list[dict[str, Any]]:
        studies = api.get(
            "/dicomweb/studies", params={"StudyInstanceUID": study_uid}, headers=auth(Role.VIEWER)
        )
        return list(studies.json())

    [study] = _poll(decided)
    assert study["00080061"]["Value"] == ["MR"] and _value(study, "00201208") == 2 * SLICES
    series = api.get(f"/dicomweb/studies/{study_uid}/series", headers=auth(Role.VIEWER)).json()
    by_class = {_value(s, "00111004"): s for s in series}
    assert set(by_class) == {"T1", "T2"}
    assert _value(by_class["T1"], "00111002") == "YES" and _value(by_class["T1"], "00111003") == "t1-qc"
    assert _value(by_class["T2"], "00111002") == "NO" and _value(by_class["T2"], "00111001") is None
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


def test_the_cli_uploads_a_dicom_folder_and_reports_each_series_decision(server: str, tmp_path: Path):
    t1, localizer = exam(_localizer)
    folder = tmp_path / "DOE_JANE_MRN0012345"
    for index, data in enumerate(t1):
        (folder / "t1" / f"IM{index:04d}").parent.mkdir(parents=True, exist_ok=True)
        (folder / "t1" / f"IM{index:04d}").write_bytes(data)
    for index, data in enumerate(localizer):
        (folder / "scout" / f"IM{index:04d}.dcm").parent.mkdir(parents=True, exist_ok=True)
        (folder / "scout" / f"IM{index:04d}.dcm").write_bytes(data)
    (folder / "notes.txt").write_text("not an image")
    env = {
        **os.environ,
        "VOXELPIPE_API_URL": server,
        "VOXELPIPE_TOKEN": mint_dev_token(TENANT, Role.UPLOADER),
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
    assert report["uploaded"]["files"] == 2 * SLICES and report["skipped"] == 1
    assert "uploading" in run.stderr and "files" in run.stderr  # progress on stderr
    decisions = {d["class"]: d for d in report["series"]}
    assert set(decisions) == {"T1", "LOCALIZER"}, report
    assert decisions["T1"]["selected"] and decisions["T1"]["rule"] == "3d-t1" and decisions["T1"]["study_id"]
    assert (
        not decisions["LOCALIZER"]["selected"] and decisions["LOCALIZER"]["rule"] == "localizers-and-derived"
    )
    assert decisions["LOCALIZER"]["study_id"] is None and decisions["T1"]["explanation"]
    # The folder's names never reached the API: the study declares the CLI's own names.
    status = subprocess.run(
        [str(VOXELPIPE), "status", report["study_id"], "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    view = json.loads(status.stdout)
    assert "DOE" not in status.stdout and "IM0000" not in status.stdout
    assert {f["name"] for f in view["files"]} == {f"{i:05d}.dcm" for i in range(2 * SLICES)}
