"""The C-STORE SCP (voxelpipe.dimse) against pynetdicom SCUs and raw sockets, with a recording receiver.

The receiver checks each instance with the pipeline's own header check (voxelpipe.dicom.sniff),
so a malformed dataset is refused as the real receive use case refuses it; what reaches the
pipeline after that is the e2e test's business (tests/e2e/test_dicom_network.py).
"""

from __future__ import annotations

import struct
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage
from pynetdicom import AE
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from tests.fixtures.dicom import make_series
from voxelpipe.dicom.sniff import read_instance_header
from voxelpipe.dimse.scp import (
    STATUS_CANNOT_UNDERSTAND,
    STATUS_OUT_OF_RESOURCES,
    STATUS_SUCCESS,
    StoreScp,
)
from voxelpipe.dimse.settings import AeTitle, ReceiverSettings
from voxelpipe.pipeline.receive import ReceivedInstance, TransferSource

CALLED = "VOXELPIPE"
LOCKED = "LOCKED"  # accepts one calling AE title only
TENANT = "hospital-a"
TIMEOUT_S = 1.0  # the receiver's network timeout here: an idle association ends after it


@dataclass
class RecordingTransfer:
    tenant: str
    source: TransferSource
    received: list[bytes] = field(default_factory=list)
    ended: int = 0

    def receive(self, data: bytes) -> ReceivedInstance:
        summary = read_instance_header(data)  # raises Rejected as the pipeline would
        self.received.append(data)
        return ReceivedInstance(
            study_id="s-1",
            study_instance_uid=summary.study_instance_uid,
            series_instance_uid=summary.series_instance_uid,
            sop_instance_uid=summary.sop_instance_uid,
            sop_class_uid=summary.sop_class_uid,
            new=True,
        )

    def end(self) -> None:
        self.ended += 1


@dataclass
class RecordingReceiver:
    transfers: list[RecordingTransfer] = field(default_factory=list)

    def open_transfer(
        self, tenant: str, source: TransferSource, actor: str | None = None
    ) -> RecordingTransfer:
        transfer = RecordingTransfer(tenant, source)
        self.transfers.append(transfer)
        return transfer

    def wait_until_ended(self, count: int) -> bool:
        """Wait until `count` transfers have ended: the receiver notes the end on its own threads."""
        return _wait_for(lambda: sum(1 for t in self.transfers if t.ended) >= count)


@pytest.fixture(scope="module")
def receiver() -> RecordingReceiver:
    return RecordingReceiver()


@pytest.fixture(scope="module")
def scp(receiver: RecordingReceiver) -> Iterator[tuple[StoreScp, int]]:
    settings = ReceiverSettings(
        ae_titles={CALLED: AeTitle(TENANT), LOCKED: AeTitle(TENANT, calling=frozenset({"TRUSTED"}))},
        port=0,
        acse_timeout_s=TIMEOUT_S,
        dimse_timeout_s=TIMEOUT_S,
        network_timeout_s=TIMEOUT_S,
        max_pdu_bytes=16384,
        max_instance_bytes=1024 * 1024,
    )
    server = StoreScp(receiver, settings, host="127.0.0.1")
    with server.running() as port:
        yield server, port


@pytest.fixture(scope="module")
def instances() -> list[bytes]:
    return make_series(n_slices=3, rows=16, cols=16).instances


def _scu(*, calling: str = "SCU") -> AE:
    ae = AE(ae_title=calling)
    ae.add_requested_context(Verification)
    ae.add_requested_context(MRImageStorage, ExplicitVRLittleEndian)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 5
    return ae


def _dataset(data: bytes) -> Dataset:
    ds = dcmread(DicomBytesIO(data))
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return ds


def _echo_works(port: int) -> bool:
    assoc = _scu().associate("127.0.0.1", port, ae_title=CALLED)
    try:
        return assoc.is_established and assoc.send_c_echo().Status == STATUS_SUCCESS
    finally:
        if assoc.is_established:
            assoc.release()


def test_echo(scp: tuple[StoreScp, int]) -> None:
    assert _echo_works(scp[1])


def test_store_and_release_end_the_transfer_once(
    scp: tuple[StoreScp, int], receiver: RecordingReceiver, instances: list[bytes]
) -> None:
    before = len(receiver.transfers)
    assoc = _scu().associate("127.0.0.1", scp[1], ae_title=CALLED)
    assert assoc.is_established
    statuses = [assoc.send_c_store(_dataset(data)).Status for data in instances]
    assoc.release()
    assert statuses == [STATUS_SUCCESS] * len(instances)
    (transfer,) = receiver.transfers[before:]
    assert (transfer.tenant, transfer.source) == (TENANT, TransferSource.C_STORE)
    assert len(transfer.received) == len(instances)
    # Each is a Part 10 file: preamble, DICM, file meta, dataset.
    assert all(data[128:132] == b"DICM" for data in transfer.received)
    assert receiver.wait_until_ended(before + 1)
    assert transfer.ended == 1


def test_abort_ends_the_transfer_once(
    scp: tuple[StoreScp, int], receiver: RecordingReceiver, instances: list[bytes]
) -> None:
    before = len(receiver.transfers)
    assoc = _scu().associate("127.0.0.1", scp[1], ae_title=CALLED)
    assert assoc.send_c_store(_dataset(instances[0])).Status == STATUS_SUCCESS
    assoc.abort()
    (transfer,) = receiver.transfers[before:]
    assert receiver.wait_until_ended(before + 1)
    assert transfer.ended == 1


def test_unknown_called_or_calling_ae_title_is_rejected(scp: tuple[StoreScp, int]) -> None:
    unknown = _scu().associate("127.0.0.1", scp[1], ae_title="SOMEONE")
    assert unknown.is_rejected
    assert (unknown.acceptor.primitive.result, unknown.acceptor.primitive.diagnostic) == (0x01, 0x07)
    untrusted = _scu(calling="STRANGER").associate("127.0.0.1", scp[1], ae_title=LOCKED)
    assert untrusted.is_rejected
    assert untrusted.acceptor.primitive.diagnostic == 0x03
    trusted = _scu(calling="TRUSTED").associate("127.0.0.1", scp[1], ae_title=LOCKED)
    assert trusted.is_established
    trusted.release()


def test_malformed_dataset_fails_and_the_association_goes_on(
    scp: tuple[StoreScp, int], receiver: RecordingReceiver, instances: list[bytes]
) -> None:
    before = len(receiver.transfers)
    good = _dataset(instances[0])
    # Pixel Data that declares far more than it holds: the header check calls it truncated.
    broken = _dataset(instances[1])
    broken.PixelData = broken.PixelData[:10]
    broken["PixelData"].VR = "OW"
    assoc = _scu().associate("127.0.0.1", scp[1], ae_title=CALLED)
    failed = assoc.send_c_store(broken)
    assert failed.Status == STATUS_CANNOT_UNDERSTAND
    assert str(failed.ErrorComment).startswith("truncated")
    assert assoc.is_established
    assert assoc.send_c_store(good).Status == STATUS_SUCCESS
    assoc.release()
    (transfer,) = receiver.transfers[before:]
    assert len(transfer.received) == 1
    assert _echo_works(scp[1])


def _wait_for(condition: Callable[[], bool]) -> bool:
    """Wait (bounded) for what the receiver does on its own threads."""
    for _ in range(200):
        if condition():
            return True
        threading.Event().wait(TIMEOUT_S / 20)
    return condition()


def test_huge_declared_pdu_closes_the_association(scp: tuple[StoreScp, int]) -> None:
    assoc = _scu().associate("127.0.0.1", scp[1], ae_title=CALLED)
    assert assoc.is_established
    # A P-DATA-TF declaring 4 GiB, written past pynetdicom's encoder: refused before it is read.
    assoc.dul.socket.socket.sendall(struct.pack(">BBL", 0x04, 0, 0xFFFFFFF0) + b"\0" * 64)
    assert _wait_for(lambda: not assoc.is_established)
    assert _echo_works(scp[1])


def test_instance_past_the_largest_taken_is_refused(
    scp: tuple[StoreScp, int], receiver: RecordingReceiver
) -> None:
    before = len(receiver.transfers)
    # 1.2 MB: past the 1 MiB taken, within what is read of one message (+ the PDU ceiling).
    (large,) = make_series(n_slices=1, rows=768, cols=768).instances
    # 2.4 MB: past what is read of one message at all.
    (huge,) = make_series(n_slices=1, rows=1100, cols=1100).instances
    assoc = _scu().associate("127.0.0.1", scp[1], ae_title=CALLED)
    refused = assoc.send_c_store(_dataset(large))
    assert refused.Status == STATUS_OUT_OF_RESOURCES
    assert str(refused.ErrorComment).startswith("too_large")
    assert assoc.is_established
    response = assoc.send_c_store(_dataset(huge))
    assert "Status" not in response  # no answer: the receiver closed the connection
    assert _wait_for(lambda: not assoc.is_established)
    assert all(not t.received for t in receiver.transfers[before:])
    assert _echo_works(scp[1])


def test_silent_association_is_aborted_by_the_timeout(scp: tuple[StoreScp, int]) -> None:
    ae = _scu()
    ae.network_timeout = None  # only the receiver's timeout can end it
    assoc = ae.associate("127.0.0.1", scp[1], ae_title=CALLED)
    assert assoc.is_established  # then nothing more is sent
    assert _wait_for(lambda: assoc.is_aborted)
    assert _echo_works(scp[1])


def test_peer_that_stops_sending_is_aborted_and_the_transfer_ends(
    scp: tuple[StoreScp, int], receiver: RecordingReceiver, instances: list[bytes]
) -> None:
    before = len(receiver.transfers)
    ae = _scu()
    ae.network_timeout = None
    assoc = ae.associate("127.0.0.1", scp[1], ae_title=CALLED)
    assert assoc.send_c_store(_dataset(instances[0])).Status == STATUS_SUCCESS
    # Neither release nor abort: the receiver's network timeout ends it.
    assert _wait_for(lambda: assoc.is_aborted)
    assert receiver.wait_until_ended(before + 1)
    (transfer,) = receiver.transfers[before:]
    assert transfer.ended == 1
    assert _echo_works(scp[1])


# `voxelpipe serve --dicom-port` (tests/e2e/test_dicom_network.py runs the receiver it starts).
def test_serve_takes_ae_titles_as_ae_equals_tenant() -> None:
    from infra.cli.main import _parser
    from infra.cli.remote import _dicom_ae_titles

    args = _parser().parse_args(["serve", "--dicom-port", "11112", "--dicom-ae-title", "RESEARCH=lab-2"])
    assert args.dicom_port == 11112
    assert _dicom_ae_titles(args.dicom_ae_titles) == {"RESEARCH": AeTitle("lab-2")}
    assert _dicom_ae_titles(None) == {"VOXELPIPE": AeTitle("demo")}  # the default
    assert "AE=TENANT" in _dicom_ae_titles(["VOXELPIPE"])
    assert "--dicom-ae-title" in _dicom_ae_titles(["VOXELPIPE=Not A Tenant"])
