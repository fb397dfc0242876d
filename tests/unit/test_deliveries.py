"""Delivery planning and idempotent acknowledgement (voxelpipe.deliveries, pipeline/deliveries.py),
and destination validation (voxelpipe.destinations), with in-memory adapters."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import TypeAdapter, ValidationError
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian

from voxelpipe.deliveries import (
    DeliveryMessage,
    DeliveryStatus,
    OutputObject,
    delivery_key,
    destinations_for,
    series_decisions,
    unacknowledged,
)
from voxelpipe.destinations import (
    Destination,
    DicomWebDestination,
    DimseDestination,
    HttpAuth,
    check_secret,
)
from voxelpipe.pipeline.attempts import archive_attempt
from voxelpipe.pipeline.deliveries import (
    DeliveryAdapters,
    RetryDelivery,
    deliver,
    handle_delivery_message,
    plan_deliveries,
    redrive,
)
from voxelpipe.ports import DestinationNotFound, ReidentificationFailed, SendFailed
from voxelpipe.records import DeliveryRecord, StudyRecord
from voxelpipe.status_events import DeliveryOutcome

DESTINATION = TypeAdapter(Destination)
SOP_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"  # Segmentation Storage


def test_destinations_are_validated_by_kind():
    web = DESTINATION.validate_python(
        {
            "kind": "dicomweb",
            "name": "pacs",
            "url": "https://pacs.example/dicom-web/studies",
            "auth": "bearer",
        }
    )
    assert isinstance(web, DicomWebDestination) and web.needs_secret()
    dimse = DESTINATION.validate_python(
        {"kind": "dimse", "name": "modality", "host": "10.0.0.5", "port": 104, "called_ae": "PACS"}
    )
    assert isinstance(dimse, DimseDestination) and dimse.calling_ae == "VOXELPIPE" and not dimse.tls
    bad = [
        {"kind": "dicomweb", "name": "Bad Name", "url": "https://x.example/"},
        {"kind": "dicomweb", "name": "a", "url": "https://x.example/", "auth": "basic"},  # no username
        {"kind": "dimse", "name": "a", "host": "h", "port": 0, "called_ae": "PACS"},
        {"kind": "dimse", "name": "a", "host": "h", "port": 104, "called_ae": "A\\B"},
        {"kind": "s3", "name": "a", "bucket": "b-1", "role_arn": "arn:aws:iam::123456789012:role/admin"},
        {"kind": "ftp", "name": "a"},
    ]
    for document in bad:
        with pytest.raises(ValidationError):
            DESTINATION.validate_python(document)
    ok = DESTINATION.validate_python(
        {
            "kind": "s3",
            "name": "research",
            "bucket": "lab-bucket",
            "role_arn": "arn:aws:iam::123456789012:role/voxelpipe-delivery-lab",
        }
    )
    assert ok.kind == "s3"


def test_a_secret_is_taken_exactly_when_the_auth_needs_one():
    basic = DicomWebDestination(name="p", url="https://p.example/", auth=HttpAuth.BASIC, username="u")  # type: ignore[arg-type]
    check_secret(basic, "pw")
    with pytest.raises(ValueError, match="needs"):
        check_secret(basic, None)
    with pytest.raises(ValueError, match="takes no"):
        check_secret(DicomWebDestination(name="p", url="https://p.example/"), "pw")  # type: ignore[arg-type]


def test_a_study_goes_to_its_decisions_then_its_requested_destinations_each_once():
    dicom = {
        "series": [
            {"study_id": "s1", "decision": {"destinations": ["pacs", "research"]}},
            {"study_id": "other", "decision": {"destinations": ["elsewhere"]}},
            {"study_id": "s1", "decision": {"destinations": ["pacs"]}},
        ]
    }
    decisions = series_decisions(dicom, "s1")
    assert destinations_for(decisions, ["research", "mine"]) == ["pacs", "research", "mine"]
    assert series_decisions(None, "s1") == []


def _item(n: int) -> OutputObject:
    return OutputObject(
        key=f"derived/s1/dicom/{n}.dcm", sop_class_uid=SOP_CLASS, sop_instance_uid=f"2.25.{n}"
    )


def test_only_unacknowledged_objects_are_sent_again():
    items = [_item(1), _item(2), _item(3)]
    assert unacknowledged(items, ["2.25.2"]) == [items[0], items[2]]
    assert unacknowledged(items, [i.sop_instance_uid for i in items]) == []
    assert delivery_key(2, "pacs") == "000002#pacs"


# ---- the use cases, with in-memory adapters -------------------------------------------------


def _dicom_bytes(sop_uid: str) -> bytes:
    ds = Dataset()
    ds.SOPClassUID = SOP_CLASS
    ds.SOPInstanceUID = sop_uid
    ds.PatientID = "PSEUDO"
    ds.StudyInstanceUID = "2.25.999"
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = SOP_CLASS
    ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


@dataclass
class Memory:
    studies: dict[str, StudyRecord] = field(default_factory=dict)
    objects: dict[str, bytes] = field(default_factory=dict)
    destinations: dict[str, Any] = field(default_factory=dict)
    records: dict[tuple[str, str], DeliveryRecord] = field(default_factory=dict)
    queued: list[DeliveryMessage] = field(default_factory=list)
    events: list[DeliveryOutcome] = field(default_factory=list)
    sent: list[tuple[str, bytes]] = field(default_factory=list)
    failing: bool = False
    fail_after: int | None = None

    # StudyStore / ObjectStorage (the parts used)
    def get_study(self, study_id: str) -> StudyRecord | None:
        return self.studies.get(study_id)

    def read(self, key: str, first_bytes: int | None = None) -> bytes:
        return self.objects[key]

    def write(self, key: str, data: bytes, content_type: str = "") -> None:
        self.objects[key] = data

    def move(self, key: str, destination: str) -> None:
        self.objects[destination] = self.objects.pop(key)

    def list_keys(self, prefix: str) -> list[str]:
        return sorted(key for key in self.objects if key.startswith(prefix))

    # Destinations
    def get(self, tenant: str, name: str) -> Any:
        if name not in self.destinations:
            raise DestinationNotFound(name)
        return self.destinations[name]


class Records:
    def __init__(self, memory: Memory) -> None:
        self.m = memory

    def create(self, record: DeliveryRecord) -> bool:
        key = (record.study_id, record.delivery)
        if key in self.m.records:
            return False
        self.m.records[key] = record
        return True

    def get(self, study_id: str, attempt: int, destination: str) -> DeliveryRecord | None:
        return self.m.records.get((study_id, delivery_key(attempt, destination)))

    def for_study(self, study_id: str) -> list[DeliveryRecord]:
        return [r for (s, _), r in self.m.records.items() if s == study_id]

    def acknowledge(self, record: DeliveryRecord, sop_instance_uid: str) -> None:
        record.acknowledged = [*(record.acknowledged or []), sop_instance_uid]

    def tried(self, record: DeliveryRecord, status: DeliveryStatus, error: str | None) -> None:
        record.attempts = int(record.attempts or 0) + 1
        self.set_status(record, status, error)

    def set_status(self, record: DeliveryRecord, status: DeliveryStatus, error: str | None) -> None:
        record.status = status.value
        record.error = error


class FakeSender:
    def __init__(self, memory: Memory, destination: Any) -> None:
        self.m = memory
        self.destination = destination

    def send(self, data: bytes, item: OutputObject) -> None:
        if self.m.failing or (self.m.fail_after is not None and len(self.m.sent) >= self.m.fail_after):
            raise SendFailed("connection refused")
        self.m.sent.append((item.sop_instance_uid, data))

    def close(self) -> None:
        pass


def _reidentify(study_id: str, dataset: Dataset) -> Dataset:
    if study_id == "no-map":
        raise ReidentificationFailed("no identity map")
    dataset.PatientID = "ORIGINAL-MRN"
    return dataset


def _adapters(memory: Memory) -> DeliveryAdapters:
    class Queue:
        def send(self, message: DeliveryMessage) -> None:
            memory.queued.append(message)

    class Secrets:
        def get(self, secret_id: str) -> Any:
            raise AssertionError("no secret expected")

    def publish(event: DeliveryOutcome) -> bool:
        memory.events.append(event)
        return True

    return DeliveryAdapters(
        store=memory,  # type: ignore[arg-type]
        storage=memory,  # type: ignore[arg-type]
        destinations=memory,  # type: ignore[arg-type]
        secrets=Secrets(),  # type: ignore[arg-type]
        deliveries=Records(memory),  # type: ignore[arg-type]
        queue=Queue(),
        make_sender=lambda destination, credentials, study_id: FakeSender(memory, destination),
        reidentify=_reidentify,
        publish=publish,
    )


def _completed(memory: Memory, study_id: str = "s1", requested: list[str] | None = None) -> StudyRecord:
    outputs = [_item(n) for n in (1, 2, 3)]
    for item in outputs:
        memory.objects[item.key] = _dicom_bytes(item.sop_instance_uid)
    memory.objects[f"derived/{study_id}/results.json"] = json.dumps(
        {"dicom_outputs": [item.model_dump() for item in outputs]}
    ).encode()
    now = datetime.now(UTC)
    study = StudyRecord(
        study_id,
        tenant="lab-a",
        status="COMPLETED",
        attempt=1,
        created_at=now,
        updated_at=now,
        results_key=f"derived/{study_id}/results.json",
        destinations=requested,
        dicom={"series": [{"study_id": study_id, "decision": {"destinations": ["pacs"]}}]},
    )
    memory.studies[study_id] = study
    return study


def _pacs(internal: bool) -> DimseDestination:
    return DimseDestination(name="pacs", internal=internal, host="h", port=104, called_ae="PACS")


def test_a_completed_study_gets_a_delivery_per_destination_and_an_unknown_one_fails_clearly():
    memory = Memory(destinations={"pacs": _pacs(False)})
    study = _completed(memory, requested=["nowhere"])
    planned = plan_deliveries(study, _adapters(memory))
    assert [(r.destination, r.status) for r in planned] == [("pacs", "PENDING"), ("nowhere", "FAILED")]
    assert "unknown destination 'nowhere'" in (planned[1].error or "")
    assert memory.queued == [DeliveryMessage(study_id="s1", attempt=1, destination="pacs")]
    assert [(e.destination, e.detail_type) for e in memory.events] == [("nowhere", "Delivery Failed")]
    # The same event again plans nothing more.
    assert plan_deliveries(study, _adapters(memory)) == []
    assert len(memory.queued) == 1


def test_a_retry_sends_only_what_was_not_acknowledged_and_a_delivered_one_is_never_sent_again():
    memory = Memory(destinations={"pacs": _pacs(False)}, fail_after=1)
    plan_deliveries(_completed(memory), _adapters(memory))
    message = memory.queued[0]
    with pytest.raises(RetryDelivery):
        deliver(message, _adapters(memory), receive_count=1, max_receive_count=5)
    record = Records(memory).get("s1", 1, "pacs")
    assert record is not None and record.acknowledged == ["2.25.1"] and record.status == "PENDING"
    assert record.attempts == 1 and record.error
    memory.fail_after = None
    assert (
        deliver(message, _adapters(memory), receive_count=2, max_receive_count=5) is DeliveryStatus.DELIVERED
    )
    assert [uid for uid, _ in memory.sent] == ["2.25.1", "2.25.2", "2.25.3"]  # each once
    assert memory.events[-1].detail_type == "Study Delivered" and memory.events[-1].acknowledged == 3
    # A repeated message sends nothing.
    assert (
        deliver(message, _adapters(memory), receive_count=1, max_receive_count=5) is DeliveryStatus.DELIVERED
    )
    assert len(memory.sent) == 3


def test_the_last_receive_fails_the_delivery_and_a_redrive_resends_it():
    memory = Memory(destinations={"pacs": _pacs(False)}, failing=True)
    plan_deliveries(_completed(memory), _adapters(memory))
    message = memory.queued.pop()
    delays: list[int] = []
    body = message.model_dump()
    for count in range(1, 5):
        with pytest.raises(RetryDelivery):
            handle_delivery_message(
                body, _adapters(memory), receive_count=count, max_receive_count=5, retry_later=delays.append
            )
    assert delays == [60, 120, 240, 480]  # backing off
    outcome = handle_delivery_message(
        body, _adapters(memory), receive_count=5, max_receive_count=5, retry_later=delays.append
    )
    assert outcome == "FAILED"
    record = Records(memory).get("s1", 1, "pacs")
    assert (
        record is not None and record.status == "FAILED" and "gave up after 5 tries" in (record.error or "")
    )
    assert memory.events[-1].detail_type == "Delivery Failed" and memory.events[-1].sends == 5
    memory.failing = False
    redriven = redrive(memory.studies["s1"], "pacs", Records(memory), _adapters(memory).queue)  # type: ignore[arg-type]
    assert redriven.status == "PENDING" and memory.queued == [message]
    assert (
        handle_delivery_message(
            body, _adapters(memory), receive_count=1, max_receive_count=5, retry_later=delays.append
        )
        == "DELIVERED"
    )
    assert len(memory.sent) == 3


def test_only_an_internal_destination_gets_re_identified_objects():
    for internal, patient in ((True, "ORIGINAL-MRN"), (False, "PSEUDO")):
        memory = Memory(destinations={"pacs": _pacs(internal)})
        plan_deliveries(_completed(memory), _adapters(memory))
        deliver(memory.queued[0], _adapters(memory), receive_count=1, max_receive_count=5)
        from pydicom import dcmread

        assert {dcmread(io.BytesIO(data)).PatientID for _, data in memory.sent} == {patient}


def test_no_identity_map_fails_an_internal_delivery_without_sending_anything():
    memory = Memory(destinations={"pacs": _pacs(True)})
    plan_deliveries(_completed(memory, study_id="no-map"), _adapters(memory))
    status = deliver(memory.queued[0], _adapters(memory), receive_count=1, max_receive_count=5)
    assert status is DeliveryStatus.FAILED and memory.sent == []
    record = Records(memory).get("no-map", 1, "pacs")
    assert record is not None and "re-identification" in (record.error or "")


def test_a_study_without_dicom_outputs_fails_its_deliveries_with_the_reason():
    memory = Memory(destinations={"pacs": _pacs(False)})
    study = _completed(memory)
    memory.objects[study.results_key] = b"{}"  # type: ignore[index]
    planned = plan_deliveries(study, _adapters(memory))
    assert planned[0].status == "FAILED" and "no DICOM outputs" in (planned[0].error or "")
    assert memory.queued == []


def test_an_unexpected_error_is_retried_and_its_last_receive_fails_the_delivery():
    memory = Memory(destinations={"pacs": _pacs(False)})
    plan_deliveries(_completed(memory), _adapters(memory))
    body = memory.queued[0].model_dump()
    memory.objects.pop("derived/s1/dicom/2.dcm")  # an output gone from the bucket
    for count in (1, 5):
        with pytest.raises(KeyError):
            handle_delivery_message(
                body, _adapters(memory), receive_count=count, max_receive_count=5, retry_later=lambda s: None
            )
    record = Records(memory).get("s1", 1, "pacs")
    assert record is not None and record.status == "FAILED" and "KeyError" in (record.error or "")
    assert memory.sent[0][0] == "2.25.1" and len(memory.sent) == 1  # the first, once


def test_a_delivery_of_an_earlier_attempt_sends_that_attempts_kept_outputs():
    memory = Memory(destinations={"pacs": _pacs(False)}, fail_after=1)
    study = _completed(memory)
    plan_deliveries(study, _adapters(memory))
    message = memory.queued[0]
    with pytest.raises(RetryDelivery):
        deliver(message, _adapters(memory), receive_count=1, max_receive_count=5)
    # Attempt 2 opens: attempt 1's outputs move under attempts/1/ (pipeline/attempts.py).
    archive_attempt(memory, "s1", 1)  # type: ignore[arg-type]
    memory.studies["s1"] = StudyRecord(
        "s1",
        tenant="lab-a",
        status="QUEUED",
        attempt=2,
        created_at=study.created_at,
        updated_at=study.updated_at,
    )
    assert not [key for key in memory.objects if key.startswith("derived/s1/dicom/")]
    memory.fail_after = None
    assert (
        deliver(message, _adapters(memory), receive_count=2, max_receive_count=5) is DeliveryStatus.DELIVERED
    )
    assert [uid for uid, _ in memory.sent] == ["2.25.1", "2.25.2", "2.25.3"]
