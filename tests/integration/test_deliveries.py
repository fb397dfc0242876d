"""Destinations and deliveries against the local cloud, sent to a real Orthanc (STOW-RS and
C-STORE) and to a C-STORE receiver that is down, then up (docs/deliveries.md)."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import pytest
from fastapi.testclient import TestClient
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE, evt
from pynetdicom.sop_class import EncapsulatedPDFStorage  # type: ignore[attr-defined]

from infra.cli.client import Client
from infra.cli.destinations import run_destinations
from infra.cli.main import _parser
from infra.local.cloud import LocalCloud
from infra.local.serve import acting_as
from tests.fixtures.orthanc import OrthancClient, free_port, orthanc_server
from voxelpipe.adapters.identity_maps import DynamoIdentityMaps
from voxelpipe.api.app import create_app
from voxelpipe.api.auth import Role, mint_dev_token
from voxelpipe.function_specs import API, EGRESS
from voxelpipe.identities import IdentityMap
from voxelpipe.keys import destinations_audit_key, new_study_id
from voxelpipe.records import AuditRecord, StudyRecord
from voxelpipe.wiring import EVENT_SOURCE, STATUS_CHANGED, EnvVar
from voxelpipe.workflow_settings import DELIVERY_MAX_RECEIVE_COUNT

TENANT = "lab-a"


def auth(role: Role = Role.ADMIN, tenant: str = TENANT) -> dict[str, str]:
    return {"authorization": f"Bearer {mint_dev_token(tenant, role)}"}


@pytest.fixture
def api(cloud: LocalCloud, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    monkeypatch.setenv(EnvVar.AUTH_MODE, "dev")
    with TestClient(acting_as(cloud, API.name, create_app())) as client:
        yield client


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OrthancClient]:
    with orthanc_server(tmp_path_factory.mktemp("orthanc")) as client:
        yield client


def test_admins_add_list_read_and_delete_destinations_with_secrets_kept_apart(api: TestClient):
    web = {
        "kind": "dicomweb",
        "name": "pacs-web",
        "internal": True,
        "url": "https://pacs.example/dicom-web/studies",
        "auth": "bearer",
        "secret": "token-not-to-be-shown",
    }
    created = api.post("/destinations", json=web, headers=auth())
    assert created.status_code == 201, created.text
    assert created.json()["has_secret"] and "token-not-to-be-shown" not in created.text
    assert "secret_id" not in created.json()["destination"]
    secrets = boto3.client("secretsmanager")
    stored = [entry for entry in secrets.list_secrets()["SecretList"] if "/destinations/" in entry["Name"]]
    assert len(stored) == 1 and stored[0]["Name"].endswith(f"destinations/{TENANT}/pacs-web")
    assert json.loads(secrets.get_secret_value(SecretId=stored[0]["ARN"])["SecretString"]) == {
        "token": "token-not-to-be-shown"
    }
    assert api.post("/destinations", json=web, headers=auth()).status_code == 409
    no_secret = {**web, "name": "other"}
    no_secret.pop("secret")
    refused = api.post("/destinations", json=no_secret, headers=auth())
    assert refused.status_code == 422 and refused.json()["errors"][0]["field"] == "secret"
    bad_ae = {"kind": "dimse", "name": "m", "host": "h", "port": 104, "called_ae": "WAY-TOO-LONG-AE-TITLE"}
    assert api.post("/destinations", json=bad_ae, headers=auth()).status_code == 422
    assert api.post("/destinations", json={**bad_ae, "called_ae": "PACS"}, headers=auth()).status_code == 201
    assert api.get("/destinations", headers=auth(Role.UPLOADER)).status_code == 403
    listed = api.get("/destinations", headers=auth()).json()["items"]
    assert [item["name"] for item in listed] == ["m", "pacs-web"]
    assert api.get("/destinations", headers=auth(tenant="lab-b")).json()["items"] == []
    assert api.get("/destinations/pacs-web", headers=auth()).json()["internal"] is True
    assert api.get("/destinations/pacs-web", headers=auth(tenant="lab-b")).status_code == 404
    assert api.delete("/destinations/pacs-web", headers=auth()).status_code == 200
    assert not [entry for entry in secrets.list_secrets()["SecretList"] if "/destinations/" in entry["Name"]]
    assert api.get("/destinations/pacs-web", headers=auth()).status_code == 404
    trail = [row.action for row in AuditRecord.query(destinations_audit_key(TENANT))]
    assert sorted(trail) == ["destination_created", "destination_created", "destination_deleted"]
    # A study may ask for destinations by name.
    study = api.post(
        "/studies",
        json={"files": [{"name": "a.nii.gz", "size": 10}], "destinations": ["m", "pacs-web"]},
        headers=auth(Role.UPLOADER),
    )
    assert study.status_code == 201
    assert StudyRecord.get(study.json()["study_id"]).destinations == ["m", "pacs-web"]


def _pdf_instance(study_uid: str, series_uid: str) -> tuple[str, bytes]:
    """A small encapsulated PDF, as Finalize writes them (de-identified identifiers only)."""
    sop = generate_uid()
    ds = Dataset()
    ds.SOPClassUID = EncapsulatedPDFStorage
    ds.SOPInstanceUID = sop
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.PatientID = "PSEUDO-1"
    ds.PatientName = "Pseudonym"
    ds.Modality = "DOC"
    ds.SeriesNumber = 900
    ds.InstanceNumber = 1
    ds.MIMETypeOfEncapsulatedDocument = "application/pdf"
    ds.EncapsulatedDocument = b"%PDF-1.4\n%%EOF\n"
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = EncapsulatedPDFStorage
    ds.file_meta.MediaStorageSOPInstanceUID = sop
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return sop, out.getvalue()


def _completed_study(cloud: LocalCloud, destinations: list[str]) -> tuple[str, str, list[str]]:
    study_id, study_uid, series_uid = new_study_id(), str(generate_uid()), str(generate_uid())
    s3 = boto3.client("s3")
    outputs, sops = [], []
    for _ in range(2):
        sop, data = _pdf_instance(study_uid, series_uid)
        key = f"derived/{study_id}/dicom/{sop}.dcm"
        s3.put_object(Bucket=cloud.bucket, Key=key, Body=data)
        outputs.append(
            {
                "key": key,
                "kind": "PDF",
                "sop_class_uid": EncapsulatedPDFStorage,
                "sop_instance_uid": sop,
                "series_instance_uid": series_uid,
            }
        )
        sops.append(sop)
    results_key = f"derived/{study_id}/results.json"
    s3.put_object(Bucket=cloud.bucket, Key=results_key, Body=json.dumps({"dicom_outputs": outputs}).encode())
    now = datetime.now(UTC)
    StudyRecord(
        study_id,
        tenant=TENANT,
        status="COMPLETED",
        attempt=1,
        created_at=now,
        updated_at=now,
        results_key=results_key,
        destinations=destinations,
    ).save()
    return study_id, study_uid, sops


class StorageScp:
    """A C-STORE receiver started on a port later (the destination is down until then)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.received: list[str] = []
        self.server: Any = None

    def start(self) -> None:
        ae = AE(ae_title="LATE")
        ae.add_supported_context(EncapsulatedPDFStorage)

        def stored(event: Any) -> int:
            self.received.append(str(event.dataset.SOPInstanceUID))
            return 0x0000

        self.server = ae.start_server(
            ("127.0.0.1", self.port), block=False, evt_handlers=[(evt.EVT_C_STORE, stored)]
        )

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()


def _sqs_event(body: dict[str, Any], receive_count: int) -> dict[str, Any]:
    return {
        "Records": [
            {
                "messageId": f"m{receive_count}",
                "receiptHandle": "not-a-handle",
                "body": json.dumps(body),
                "attributes": {
                    "ApproximateReceiveCount": str(receive_count),
                    "SentTimestamp": "0",
                    "SenderId": "x",
                    "ApproximateFirstReceiveTimestamp": "0",
                },
                "messageAttributes": {},
                "md5OfBody": "x",
                "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:q",
                "awsRegion": "us-east-1",
            }
        ]
    }


def test_a_completed_study_is_delivered_by_stow_rs_and_c_store_and_a_down_one_after_its_redrive(
    api: TestClient, cloud: LocalCloud, orthanc: OrthancClient, monkeypatch: pytest.MonkeyPatch
):
    late_port = free_port()
    for destination in (
        {"kind": "dicomweb", "name": "web", "url": f"{orthanc.url}/dicom-web/studies"},
        {
            "kind": "dimse",
            "name": "dimse",
            "host": "127.0.0.1",
            "port": orthanc.dicom_port,
            "called_ae": "ORTHANC",
        },
        {"kind": "dimse", "name": "late", "host": "127.0.0.1", "port": late_port, "called_ae": "LATE"},
        # The tenant's own PACS (the same Orthanc): outputs go there re-identified.
        {"kind": "dicomweb", "name": "home", "internal": True, "url": f"{orthanc.url}/dicom-web/studies"},
    ):
        assert api.post("/destinations", json=destination, headers=auth()).status_code == 201
    study_id, study_uid, sops = _completed_study(cloud, ["web", "dimse", "late", "unknown", "home"])
    original_uid = str(generate_uid())
    DynamoIdentityMaps().save(
        study_id,
        IdentityMap(
            uids={study_uid: original_uid},
            patient={"00100020": {"vr": "LO", "Value": ["MRN-0042"]}},
            study={"0020000D": {"vr": "UI", "Value": [original_uid]}},
        ),
    )
    # The COMPLETED event, as tracking puts it: the rule takes it to the delivery queue, and the
    # local cloud's event source mapping hands it (and the deliveries it plans) to egress.
    boto3.client("events").put_events(
        Entries=[
            {
                "EventBusName": cloud.env(EnvVar.EVENT_BUS_NAME),
                "Source": EVENT_SOURCE,
                "DetailType": STATUS_CHANGED,
                "Detail": json.dumps(
                    {
                        "study_id": study_id,
                        "tenant": TENANT,
                        "attempt": 1,
                        "status": "COMPLETED",
                        "at": datetime.now(UTC).isoformat(),
                    }
                ),
            }
        ]
    )
    deliveries = {
        d["destination"]: d
        for d in api.get(f"/studies/{study_id}/deliveries", headers=auth()).json()["items"]
    }
    assert deliveries["web"]["status"] == "DELIVERED" and sorted(deliveries["web"]["acknowledged"]) == sorted(
        sops
    )
    assert deliveries["dimse"]["status"] == "DELIVERED" and deliveries["dimse"]["attempts"] == 1
    assert (
        deliveries["unknown"]["status"] == "FAILED"
        and "unknown destination" in deliveries["unknown"]["error"]
    )
    late = deliveries["late"]
    assert late["status"] == "PENDING" and late["attempts"] == 1 and "association" in late["error"]
    found = orthanc.qido_studies(StudyInstanceUID=study_uid)
    assert len(found) == 1 and found[0]["00201208"]["Value"] == [2]  # both instances, once
    assert found[0]["00100020"]["Value"] == ["PSEUDO-1"]  # external: de-identified
    assert deliveries["home"]["status"] == "DELIVERED" and deliveries["home"]["internal"] is True
    (home,) = orthanc.qido_studies(PatientID="MRN-0042")  # internal: under the original exam
    assert home["0020000D"]["Value"] == [original_uid] and home["00201208"]["Value"] == [2]
    assert api.get(f"/studies/{study_id}/deliveries", headers=auth(tenant="lab-b")).status_code == 404

    # The down destination's message comes back until its last receive: then FAILED (to the DLQ).
    message = {"study_id": study_id, "attempt": 1, "destination": "late"}
    monkeypatch.setattr("voxelpipe.adapters.queues.delay_retry", lambda *args: None)
    for count in range(2, DELIVERY_MAX_RECEIVE_COUNT + 1):
        payload, error = cloud.invoke(EGRESS.name, _sqs_event(message, count))
        assert error is None
        failures = payload["batchItemFailures"]
        assert failures == ([] if count == DELIVERY_MAX_RECEIVE_COUNT else [{"itemIdentifier": f"m{count}"}])
    late = api.get(f"/studies/{study_id}/deliveries", headers=auth()).json()["items"]
    late = next(d for d in late if d["destination"] == "late")
    assert late["status"] == "FAILED" and "gave up" in late["error"]
    assert late["attempts"] == DELIVERY_MAX_RECEIVE_COUNT

    # It comes up; a redrive delivers, once; a repeated message sends nothing again.
    scp = StorageScp(late_port)
    scp.start()
    try:
        redriven = api.post(f"/studies/{study_id}/deliveries/late/redrive", headers=auth(Role.UPLOADER))
        assert redriven.status_code == 202, redriven.text
        late = next(
            d
            for d in api.get(f"/studies/{study_id}/deliveries", headers=auth()).json()["items"]
            if d["destination"] == "late"
        )
        assert late["status"] == "DELIVERED" and late["error"] is None
        payload, error = cloud.invoke(EGRESS.name, _sqs_event(message, 1))
        assert error is None and payload["batchItemFailures"] == []
        assert sorted(scp.received) == sorted(sops)
    finally:
        scp.stop()
    assert api.post(f"/studies/{study_id}/deliveries/nowhere/redrive", headers=auth()).status_code == 404


def test_the_destinations_cli_adds_lists_shows_and_deletes_with_the_secret_from_the_environment(
    api: TestClient, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
):
    client = Client.__new__(Client)
    client.token, client.http = None, api
    api.headers.update(auth())

    def cli(*argv: str) -> tuple[int, str, str]:
        code = run_destinations(_parser().parse_args(list(argv)), client)
        out, err = capsys.readouterr()
        return code, out, err

    spec = tmp_path / "pacs.json"
    spec.write_text(
        json.dumps({"kind": "dicomweb", "name": "pacs", "url": "https://pacs.example/", "auth": "bearer"})
    )
    monkeypatch.setenv("PACS_TOKEN", "t0ken")
    assert cli("destinations", "add", str(spec), "--secret-env", "PACS_TOKEN")[0] == 0
    code, out, _ = cli("destinations", "list")
    assert code == 0 and "pacs" in out and "secret kept" in out and "t0ken" not in out
    spec.write_text(json.dumps({"kind": "dicomweb", "name": "x", "url": "https://x.example/", "secret": "s"}))
    code, _, err = cli("destinations", "add", str(spec))
    assert code == 2 and "--secret-env" in err
    assert json.loads(cli("destinations", "show", "pacs", "--json")[1])["kind"] == "dicomweb"
    assert cli("destinations", "delete", "pacs")[0] == 0
    assert "no destinations" in cli("destinations", "list")[1]
