"""DICOMweb routes (docs/dicomweb.md) in process, as the API function, against the local cloud:
STOW-RS into the receive use case, QIDO-RS over seeded exam records, WADO-RS of seeded
de-identified objects; content negotiation, limits, bad bodies and tenant isolation."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterator
from typing import Any

import boto3
import pydicom
import pytest
from fastapi.testclient import TestClient

from infra.local.cloud import LocalCloud
from infra.local.serve import acting_as
from tests.fixtures.cloud import checked_cloud
from tests.fixtures.dicom import make_series
from tests.fixtures.events import load_event
from voxelpipe import tracking
from voxelpipe.adapters.study_table import DynamoStudyStore
from voxelpipe.api.app import create_app
from voxelpipe.api.auth import Role, mint_dev_token
from voxelpipe.api.routes import dicomweb
from voxelpipe.dicom.web import FailureReason, multipart_related, parse_multipart_related
from voxelpipe.function_specs import API
from voxelpipe.keys import derived_key, upload_prefix
from voxelpipe.pipeline.prepare import DEIDENTIFIED_PREFIX
from voxelpipe.wiring import EnvVar

TENANT, OTHER = "lab-a", "lab-b"
STOW_TYPE = "application/dicom"


@pytest.fixture(scope="module")
def cloud(template: dict[str, Any]) -> Iterator[LocalCloud]:
    """One local cloud for the module: its tests use distinct UIDs."""
    with checked_cloud(template) as local:
        yield local


@pytest.fixture(scope="module")
def api(cloud: LocalCloud) -> Iterator[TestClient]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(EnvVar.AUTH_MODE, "dev")
        with TestClient(acting_as(cloud, API.name, create_app())) as client:
            yield client


def auth(role: Role = Role.UPLOADER, tenant: str = TENANT, **headers: str) -> dict[str, str]:
    return {"authorization": f"Bearer {mint_dev_token(tenant, role)}", **headers}


def stow(api: TestClient, parts: list[bytes], path: str = "/dicomweb/studies", **headers: str) -> Any:
    body, content_type = multipart_related([(part, STOW_TYPE) for part in parts])
    return api.post(path, content=body, headers=auth(**{"content-type": content_type, **headers}))


def sequence(response: dict[str, Any], tag: str) -> list[dict[str, Any]]:
    return response.get(tag, {}).get("Value", [])


REFERENCED, FAILED, FAILURE_REASON, INSTANCE_UID, RETRIEVE_URL = (
    "00081199",
    "00081198",
    "00081197",
    "00081155",
    "00081190",
)


# --- STOW-RS --------------------------------------------------------------------------------------


def test_stow_stores_an_exam_and_answers_with_de_identified_uids(api: TestClient, cloud: LocalCloud):
    t1 = make_series(3, 8, 8, seed=1)
    t2 = make_series(2, 8, 8, seed=2, study_uid=t1.study_uid)
    response = stow(api, t1.instances + t2.instances)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/dicom+json"
    stored = sequence(response.json(), REFERENCED)
    assert len(stored) == 5 and FAILED not in response.json()
    # No UID the sender used comes back: only the pseudonymous ones the stored copies carry.
    originals = {t1.study_uid, t1.series_uid, t2.series_uid}
    originals |= {str(pydicom.dcmread(io.BytesIO(i)).SOPInstanceUID) for i in t1.instances + t2.instances}
    assert not any(uid in response.text for uid in originals)
    urls = [item[RETRIEVE_URL]["Value"][0] for item in stored]
    study_url = response.json()[RETRIEVE_URL]["Value"][0]
    assert all(url.startswith(study_url + "/series/") and "/instances/" in url for url in urls)
    assert len({url.split("/series/")[1].split("/")[0] for url in urls}) == 2  # two series
    # Written to one exam study's uploads, each under its pseudonymous SOP Instance UID.
    exams = [
        s
        for s in DynamoStudyStore()
        .tenant_studies(TENANT, status=None, since=None, until=None, limit=50, start_key=None)
        .items
        if s.source == "stow"
    ]
    assert len(exams) == 1
    keys = [
        o["Key"]
        for o in boto3.client("s3")
        .list_objects_v2(Bucket=cloud.bucket, Prefix=upload_prefix(TENANT, exams[0].study_id))
        .get("Contents", [])
    ]
    stored_uids = {item[INSTANCE_UID]["Value"][0] for item in stored}
    assert {key.rsplit("/", 1)[1].removesuffix(".dcm") for key in keys} <= stored_uids


def test_stow_some_stored_is_202_none_stored_is_409(api: TestClient):
    good = make_series(1, 8, 8, seed=3).instances
    partly = stow(api, [*good, b"this is not DICOM at all"])
    assert partly.status_code == 202, partly.text
    assert len(sequence(partly.json(), REFERENCED)) == 1
    failed = sequence(partly.json(), FAILED)
    assert [item[FAILURE_REASON]["Value"][0] for item in failed] == [FailureReason.CANNOT_UNDERSTAND]
    none = stow(api, [b"nope", b"neither"])
    assert none.status_code == 409, none.text
    assert none.headers["content-type"] == "application/dicom+json"
    assert REFERENCED not in none.json() and len(sequence(none.json(), FAILED)) == 2


def test_stow_to_a_study_refuses_instances_of_another(api: TestClient):
    mine = make_series(1, 8, 8, seed=4)
    other = make_series(1, 8, 8, seed=5)
    response = stow(api, mine.instances + other.instances, f"/dicomweb/studies/{mine.study_uid}")
    assert response.status_code == 202, response.text
    reasons = [i[FAILURE_REASON]["Value"][0] for i in sequence(response.json(), FAILED)]
    assert reasons == [FailureReason.DATA_SET_DOES_NOT_MATCH]
    # The failed item names the SOP class only: no identifier of the sender's comes back.
    assert other.study_uid not in response.text and mine.study_uid not in response.text


def test_stow_refuses_other_media_types_large_bodies_and_broken_multipart(api: TestClient):
    json_body = api.post("/dicomweb/studies", json={"x": 1}, headers=auth())
    assert json_body.status_code == 415 and json_body.json()["code"] == "unsupported_media_type"
    assert json_body.headers["content-type"] == "application/problem+json"
    metadata_form = api.post(
        "/dicomweb/studies",
        content=b"--b\r\n\r\n{}\r\n--b--\r\n",
        headers=auth(**{"content-type": 'multipart/related; type="application/dicom+json"; boundary=b'}),
    )
    assert metadata_form.status_code == 415
    too_large = api.post(
        "/dicomweb/studies",
        content=b"x" * (dicomweb.MAX_BODY_BYTES + 1),
        headers=auth(**{"content-type": 'multipart/related; type="application/dicom"; boundary=b'}),
    )
    problem = too_large.json()
    assert too_large.status_code == 413 and problem["code"] == "payload_too_large"
    assert "POST /studies" in problem["detail"] and "input_format 'dicom'" in problem["detail"]
    many = stow(api, [b""] * (dicomweb.MAX_PARTS + 1))
    assert many.status_code == 413 and many.json()["code"] == "too_many_instances"
    no_parts = api.post(
        "/dicomweb/studies",
        content=b"no boundary in here",
        headers=auth(**{"content-type": 'multipart/related; type="application/dicom"; boundary=zz'}),
    )
    assert no_parts.status_code == 400 and no_parts.json()["code"] == "invalid_multipart"
    viewer = stow(api, [b"x"], authorization=f"Bearer {mint_dev_token(TENANT, Role.VIEWER)}")
    assert viewer.status_code == 403


# --- QIDO-RS and WADO-RS over seeded exams --------------------------------------------------------

EXAM_UID, T1_UID, LOCALIZER_UID = "2.25.1001", "2.25.1002", "2.25.1003"


def _exam(study_id: str, tenant: str, study_uid: str, series: list[dict[str, Any]]) -> None:
    store = DynamoStudyStore()
    tracking.create_study(store, study_id, tenant, analyses=["qc"], priority="normal", source="upload")
    store.set_study_fields(study_id, {"dicom": {"study_instance_uid": study_uid, "series": series}})


def _series(uid: str, number: int, modality: str, cls: str, study_id: str | None) -> dict[str, Any]:
    return {
        "series_instance_uid": uid,
        "series_number": number,
        "modality": modality,
        "instances": 2,
        "tags": {"SeriesClass": cls, "SeriesDescription": f"{cls} series", "RepetitionTime": 2300.0},
        "decision": {
            "selected": study_id is not None,
            "rule": "default-t1",
            "explanation": [f"a {cls}", "second line"],
        },
        "study_id": study_id,
    }


@pytest.fixture(scope="module")
def seeded(api: TestClient, cloud: LocalCloud) -> dict[str, Any]:
    """lab-a: an exam with a selected T1 (its de-identified copies held) and a localizer not
    selected; another MR-only exam; lab-b: an exam of its own."""
    exam_id, t1_study = "exam" + "a" * 28, "t1st" + "a" * 28
    _exam(
        exam_id,
        TENANT,
        EXAM_UID,
        [_series(T1_UID, 3, "MR", "T1", t1_study), _series(LOCALIZER_UID, 1, "MR", "LOCALIZER", None)],
    )
    _exam("exam" + "b" * 28, TENANT, "2.25.2001", [_series("2.25.2002", 1, "CT", "CT", None)])
    _exam("exam" + "c" * 28, OTHER, "2.25.3001", [_series("2.25.3002", 1, "MR", "T1", "t1st" + "c" * 28)])
    # The T1's de-identified copies, as Prepare writes them.
    copies = make_series(2, 8, 8, seed=6, study_uid=EXAM_UID, series_uid=T1_UID, phi=False).instances
    s3 = boto3.client("s3")
    sops = []
    for number, data in enumerate(copies):
        key = derived_key(t1_study, f"{DEIDENTIFIED_PREFIX}{number:05d}.dcm")
        s3.put_object(Bucket=cloud.bucket, Key=key, Body=data)
        sops.append(str(pydicom.dcmread(io.BytesIO(data)).SOPInstanceUID))
    return {"exam_id": exam_id, "copies": copies, "sops": sops}


def qido(api: TestClient, path: str, role: Role = Role.VIEWER, tenant: str = TENANT, **params: Any) -> Any:
    return api.get(path, params=params, headers=auth(role, tenant))


def values(results: list[dict[str, Any]], tag: str) -> list[Any]:
    return [r[tag]["Value"][0] for r in results if tag in r]


STUDY_UID_TAG, SERIES_UID_TAG, MODALITIES, PRIVATE_STUDY_ID, PRIVATE_SELECTED = (
    "0020000D",
    "0020000E",
    "00080061",
    "00111001",
    "00111002",
)


def test_qido_finds_the_tenants_exams_by_their_attributes(api: TestClient, seeded: dict[str, Any]):
    everything = qido(api, "/dicomweb/studies")
    assert everything.status_code == 200 and everything.headers["content-type"] == "application/dicom+json"
    uids = values(everything.json(), STUDY_UID_TAG)
    assert {EXAM_UID, "2.25.2001"} <= set(uids) and "2.25.3001" not in uids  # lab-b's is not listed
    one = qido(api, "/dicomweb/studies", StudyInstanceUID=EXAM_UID).json()
    assert values(one, STUDY_UID_TAG) == [EXAM_UID] and values(one, PRIVATE_STUDY_ID) == [seeded["exam_id"]]
    assert one[0][MODALITIES]["Value"] == ["MR"] and one[0]["00201206"]["Value"] == [2]
    assert values(qido(api, "/dicomweb/studies", ModalitiesInStudy="CT").json(), STUDY_UID_TAG) == [
        "2.25.2001"
    ]
    page = qido(api, "/dicomweb/studies", ModalitiesInStudy="MR,CT", limit=1, offset=1).json()
    assert len(page) == 1
    assert qido(api, "/dicomweb/studies", StudyInstanceUID="2.25.3001").json() == []


def test_qido_series_show_each_decision(api: TestClient, seeded: dict[str, Any]):
    series = qido(api, f"/dicomweb/studies/{EXAM_UID}/series").json()
    assert values(series, SERIES_UID_TAG) == [T1_UID, LOCALIZER_UID]
    assert values(series, PRIVATE_SELECTED) == ["YES", "NO"]
    assert values(series, PRIVATE_STUDY_ID) == ["t1st" + "a" * 28]  # the localizer has no study
    assert series[0][RETRIEVE_URL]["Value"][0].endswith(f"/dicomweb/studies/{EXAM_UID}/series/{T1_UID}")
    assert "00180080" not in series[0]  # RepetitionTime only when asked for
    asked = qido(api, f"/dicomweb/studies/{EXAM_UID}/series", Modality="MR", includefield="RepetitionTime")
    assert asked.json()[0]["00180080"]["Value"] == [2300.0]
    assert "00180080" in qido(api, "/dicomweb/series", includefield="all").json()[0]
    across = qido(api, "/dicomweb/series", Modality="CT").json()
    assert values(across, SERIES_UID_TAG) == ["2.25.2002"] and values(across, STUDY_UID_TAG) == ["2.25.2001"]
    assert values(qido(api, "/dicomweb/series", SeriesInstanceUID=LOCALIZER_UID).json(), SERIES_UID_TAG) == [
        LOCALIZER_UID
    ]
    bad = qido(api, "/dicomweb/series", includefield="NotAKeyword")
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "includefield"
    # Another tenant's study is a 404, as one that does not exist.
    for uid in ("2.25.3001", "2.25.9999"):
        missing = qido(api, f"/dicomweb/studies/{uid}/series")
        assert missing.status_code == 404 and missing.json()["code"] == "dicom_study_not_found"
    refused = api.get("/dicomweb/studies", headers=auth(Role.VIEWER, accept="application/xml"))
    assert refused.status_code == 406 and refused.json()["code"] == "not_acceptable"


def test_wado_retrieves_the_de_identified_copies(api: TestClient, seeded: dict[str, Any]):
    series_url = f"/dicomweb/studies/{EXAM_UID}/series/{T1_UID}"
    whole = api.get(series_url, headers=auth(Role.VIEWER))
    assert whole.status_code == 200, whole.text
    parts = parse_multipart_related(whole.headers["content-type"], whole.content)
    assert sorted(p.data for p in parts) == sorted(seeded["copies"])
    assert all(p.content_type == "application/dicom" for p in parts)
    sop = seeded["sops"][0]
    one = api.get(
        f"{series_url}/instances/{sop}",
        headers=auth(Role.VIEWER, accept='multipart/related; type="application/dicom"; transfer-syntax=*'),
    )
    assert one.status_code == 200
    [part] = parse_multipart_related(one.headers["content-type"], one.content)
    assert str(pydicom.dcmread(io.BytesIO(part.data)).SOPInstanceUID) == sop
    metadata = api.get(f"{series_url}/metadata", headers=auth(Role.VIEWER))
    assert metadata.headers["content-type"] == "application/dicom+json"
    assert len(metadata.json()) == 2 and "7FE00010" not in json.dumps(metadata.json())
    instance_metadata = api.get(f"{series_url}/instances/{sop}/metadata", headers=auth(Role.VIEWER)).json()
    assert instance_metadata[0]["00080018"]["Value"] == [sop]
    # What is not held, another tenant's, or not acceptable.
    assert api.get(f"{series_url}/instances/2.25.77", headers=auth(Role.VIEWER)).status_code == 404
    localizer = api.get(f"/dicomweb/studies/{EXAM_UID}/series/{LOCALIZER_UID}", headers=auth(Role.VIEWER))
    assert localizer.status_code == 404 and localizer.json()["code"] == "dicom_series_not_found"
    foreign = api.get(series_url, headers=auth(Role.VIEWER, OTHER))
    assert foreign.status_code == 404 and foreign.json()["code"] == "dicom_study_not_found"
    rendered = api.get(series_url, headers=auth(Role.VIEWER, accept="image/jpeg"))
    assert rendered.status_code == 406
    other_syntax = api.get(
        series_url,
        headers=auth(
            Role.VIEWER,
            accept='multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.4.50',
        ),
    )
    assert other_syntax.status_code == 406


def test_wado_answers_413_naming_the_instance_route_past_the_response_limit(
    api: TestClient, seeded: dict[str, Any], monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(dicomweb, "MAX_BODY_BYTES", len(seeded["copies"][0]) + 10)
    response = api.get(f"/dicomweb/studies/{EXAM_UID}/series/{T1_UID}", headers=auth(Role.VIEWER))
    assert response.status_code == 413 and response.json()["code"] == "response_too_large"
    assert "/instances/" in response.json()["detail"]
    one = api.get(
        f"/dicomweb/studies/{EXAM_UID}/series/{T1_UID}/instances/{seeded['sops'][0]}",
        headers=auth(Role.VIEWER),
    )
    assert one.status_code == 200


def _event(
    method: str, path: str, role: str, headers: dict[str, str], body: bytes | None = None
) -> dict[str, Any]:
    """An API Gateway REST proxy event for the API function (Cognito claims in the context)."""
    event = load_event("api_get_study.json", TENANT=TENANT, ROLE=role, STUDY_ID="unused")
    event.update(path=path, httpMethod=method, pathParameters={"proxy": path.lstrip("/")})
    event["headers"] = {**event["headers"], **headers}
    event["requestContext"] = {**event["requestContext"], "httpMethod": method, "path": "/v1" + path}
    if body is not None:  # a binary media type: API Gateway hands it over base64-encoded
        event.update(body=base64.b64encode(body).decode(), isBase64Encoded=True)
    return event


def _headers(response: dict[str, Any]) -> dict[str, str]:
    multi = {name: values[0] for name, values in (response.get("multiValueHeaders") or {}).items()}
    return {name.lower(): value for name, value in {**(response.get("headers") or {}), **multi}.items()}


def test_through_the_lambda_handler_dicom_bodies_travel_base64_and_dicom_json_as_text(
    cloud: LocalCloud, seeded: dict[str, Any], monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv(EnvVar.AUTH_MODE, "cognito")  # as deployed: API Gateway's claims in the event
    body, content_type = multipart_related([(make_series(1, 8, 8, seed=21).instances[0], STOW_TYPE)])
    stored, error = cloud.invoke(
        "api", _event("POST", "/dicomweb/studies", "uploader", {"Content-Type": content_type}, body)
    )
    assert error is None and stored["statusCode"] == 200, stored
    assert not stored["isBase64Encoded"] and _headers(stored)["content-type"] == "application/dicom+json"
    assert len(sequence(json.loads(stored["body"]), REFERENCED)) == 1
    accept = {"Accept": 'multipart/related; type="application/dicom"'}
    series, error = cloud.invoke(
        "api", _event("GET", f"/dicomweb/studies/{EXAM_UID}/series/{T1_UID}", "viewer", accept)
    )
    assert error is None and series["statusCode"] == 200 and series["isBase64Encoded"]
    parts = parse_multipart_related(_headers(series)["content-type"], base64.b64decode(series["body"]))
    assert sorted(p.data for p in parts) == sorted(seeded["copies"])
