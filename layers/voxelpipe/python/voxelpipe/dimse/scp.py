"""The C-STORE SCP: C-ECHO and C-STORE of the storage SOP classes, one transfer per association.

Each association is checked when requested: its called AE title must be one of ours (it names the
tenant), and its calling AE title one that title accepts; otherwise A-ASSOCIATE-RJ (rejected
permanent, "called/calling AE title not recognised"). Once accepted, every C-STORE hands the
instance, as a DICOM Part 10 file, to the association's transfer (opened at its first instance;
an association that only echoes opens none); its end -- release, abort, or the connection closing,
whichever pynetdicom reports first -- ends the transfer exactly once.

Statuses (PS3.4 B.2.3) a C-STORE gets:

* 0x0000 success;
* 0xC000 ("cannot understand") with the reason code as Error Comment: an instance the pipeline
  refuses (not DICOM, truncated, no pixel data, a transfer syntax we cannot decode, ...);
* 0xA700 ("out of resources") with the reason code: too large, or a decompression bomb;
* 0x0110 ("processing failure"): anything else went wrong (storage unreachable...); the sender may
  send the instance again.

The association lives on after a failure status. What keeps a hostile peer from holding the
receiver: the timeouts (settings), a PDU declaring more than the ceiling closes the connection
before it is read, and a message that grows past the largest instance closes it too (both read as
"connection closed" by pynetdicom, which aborts the association); at most `max_associations`
associations at once (then A-ASSOCIATE-RJ transient).

Logs carry counts, the tenant, AE titles and pseudonymous study ids: never a name, patient id or
an original UID.
"""

from __future__ import annotations

import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

from pydicom.dataset import Dataset
from pydicom.uid import UID
from pynetdicom import AE, evt
from pynetdicom.presentation import PresentationContext, StoragePresentationContexts
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]
from pynetdicom.transport import AssociationSocket, RequestHandler, ThreadedAssociationServer

from voxelpipe.dicom.sniff import supported_transfer_syntaxes
from voxelpipe.dimse.settings import ReceiverSettings
from voxelpipe.observability import logger
from voxelpipe.pipeline.receive import ReceivedInstance, TransferSource
from voxelpipe.rejections import ReasonCode, Rejected

__all__ = [
    "STATUS_CANNOT_UNDERSTAND",
    "STATUS_OUT_OF_RESOURCES",
    "STATUS_PROCESSING_FAILURE",
    "STATUS_SUCCESS",
    "InstanceReceiverPort",
    "StoreScp",
    "Transfer",
]

STATUS_SUCCESS = 0x0000
STATUS_CANNOT_UNDERSTAND = 0xC000
STATUS_OUT_OF_RESOURCES = 0xA700
STATUS_PROCESSING_FAILURE = 0x0110
# Reasons that say "too much", not "not understood".
_RESOURCE_REASONS = frozenset({ReasonCode.TOO_LARGE, ReasonCode.DECOMPRESSION_BOMB})

# A-ASSOCIATE-RJ: result 1 (rejected permanent), source 1 (service user), diagnostic 3/7.
_REJECT_CALLING = (0x01, 0x01, 0x03)
_REJECT_CALLED = (0x01, 0x01, 0x07)
_ERROR_COMMENT_MAX = 64  # Error Comment is LO


class Transfer(Protocol):
    """One association's instances on their way into the pipeline (voxelpipe.pipeline.receive)."""

    def receive(self, data: bytes) -> ReceivedInstance: ...

    def end(self) -> None: ...


class InstanceReceiverPort(Protocol):
    """What the SCP hands instances to: voxelpipe.pipeline.receive.InstanceReceiver, or a fake."""

    def open_transfer(self, tenant: str, source: TransferSource, actor: str | None = None) -> Transfer: ...


@dataclass
class _AssociationState:
    """What we keep per association: its tenant, its transfer once opened, and counts for the log."""

    tenant: str
    called: str
    calling: str
    transfer: Transfer | None = None
    stored: int = 0
    failed: int = 0
    ended: bool = False
    # Opening and ending the transfer are serialised: pynetdicom may report the connection closing
    # (its network thread) while a C-STORE is handled (the association's thread).
    lock: threading.Lock = field(default_factory=threading.Lock)


class _BoundedSocket(AssociationSocket):
    """An association's socket that refuses to read a PDU declaring more than `ceiling` bytes, and
    more than `message_limit` bytes of one DIMSE message (what the peer sends between two messages
    we finished decoding). Raising OSError is what pynetdicom reads as the connection closing:
    the association is aborted and the receiver goes on."""

    ceiling = 0
    message_limit = 0
    received_since_message = 0

    def recv(self, nr_bytes: int) -> bytearray:
        if nr_bytes > self.ceiling:
            logger.warning(
                "dicom receiver: a PDU declared past the ceiling; closing", extra={"bytes": nr_bytes}
            )
            raise OSError(f"a PDU of {nr_bytes} bytes is past the receiver's ceiling")
        data = super().recv(nr_bytes)
        self.received_since_message += len(data)
        if self.received_since_message > self.message_limit:
            logger.warning("dicom receiver: a message grew past the largest instance; closing")
            raise OSError("a DIMSE message is past the largest instance the receiver takes")
        return data


def _bounded_handler(settings: ReceiverSettings) -> type[RequestHandler]:
    class BoundedRequestHandler(RequestHandler):
        def _create_association(self) -> Any:
            assoc = super()._create_association()
            sock = assoc.dul.socket
            assert sock is not None
            sock.__class__ = _BoundedSocket  # the same socket, with the bounded recv
            assert isinstance(sock, _BoundedSocket)
            sock.ceiling = settings.pdu_ceiling_bytes
            # The dataset, its command set and PDV headers: room for more than the dataset alone.
            sock.message_limit = settings.max_instance_bytes + settings.pdu_ceiling_bytes
            sock.received_since_message = 0
            return assoc

    return BoundedRequestHandler


def _storage_contexts() -> list[PresentationContext]:
    """The storage SOP classes (pynetdicom's list), each with every transfer syntax we can decode,
    and Verification (C-ECHO)."""
    syntaxes: list[str | bytes | UID] = [UID(uid) for uid in sorted(supported_transfer_syntaxes())]
    contexts = []
    for template in StoragePresentationContexts:
        context = PresentationContext()
        context.abstract_syntax = template.abstract_syntax
        context.transfer_syntax = syntaxes
        contexts.append(context)
    verification = PresentationContext()
    verification.abstract_syntax = Verification
    verification.transfer_syntax = syntaxes
    contexts.append(verification)
    return contexts


def _status(code: int, comment: str | None = None) -> Dataset:
    status = Dataset()
    status.Status = code
    if comment:
        status.ErrorComment = comment[:_ERROR_COMMENT_MAX]
    return status


class StoreScp:
    """The receiver: `start()` listens (in a thread of its own) and returns the bound port; `stop()`
    ends it; `serve_forever()` blocks (the Fargate service's main)."""

    def __init__(
        self,
        receiver: InstanceReceiverPort,
        settings: ReceiverSettings,
        *,
        host: str = "0.0.0.0",
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.receiver = receiver
        self.settings = settings
        self.host = host
        self.ssl_context = ssl_context
        self._states: dict[int, _AssociationState] = {}
        self._lock = threading.Lock()
        self._server: ThreadedAssociationServer | None = None
        self._thread: threading.Thread | None = None
        self.ae = AE()
        self.ae.supported_contexts = _storage_contexts()
        self.ae.acse_timeout = settings.acse_timeout_s
        self.ae.dimse_timeout = settings.dimse_timeout_s
        self.ae.network_timeout = settings.network_timeout_s
        self.ae.maximum_pdu_size = settings.max_pdu_bytes
        self.ae.maximum_associations = settings.max_associations
        # Called and calling AE titles are checked per association against our map (EVT_REQUESTED).
        self.ae.require_called_aet = False

    # -- running -----------------------------------------------------------------------------
    def start(self) -> int:
        """Listen on settings.port (0: any free port) in a thread; returns the port bound."""
        handlers: list[evt.EventHandlerType] = [
            (evt.EVT_REQUESTED, self._on_requested),
            (evt.EVT_C_ECHO, self._on_echo),
            (evt.EVT_C_STORE, self._on_store),
            (evt.EVT_DIMSE_RECV, self._on_message),
            (evt.EVT_RELEASED, self._on_end),
            (evt.EVT_ABORTED, self._on_end),
            (evt.EVT_CONN_CLOSE, self._on_end),
        ]
        server = self.ae.make_server(
            (self.host, self.settings.port),
            ae_title=next(iter(self.settings.ae_titles)),
            ssl_context=self.ssl_context,
            evt_handlers=handlers,
            server_class=ThreadedAssociationServer,
            request_handler=_bounded_handler(self.settings),
        )
        server.daemon_threads = True
        self._server = server
        self.ae._servers.append(
            server
        )  # as AE.start_server does: AE.shutdown() and the server's own expect it
        self._thread = threading.Thread(target=server.serve_forever, name="dicom-receiver", daemon=True)
        self._thread.start()
        port = int(server.server_address[1])
        logger.info(
            "dicom receiver listening",
            extra={"port": port, "ae_titles": sorted(self.settings.ae_titles), "tls": bool(self.ssl_context)},
        )
        return port

    def stop(self) -> None:
        """Stop listening and end every association (their transfers end as they close)."""
        if self._server is not None:
            self.ae.shutdown()  # stops the server and aborts its associations
            self._server = None
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None

    def serve_forever(self) -> None:
        self.start()
        assert self._thread is not None
        try:
            while self._thread.is_alive():
                self._thread.join(1)
        finally:
            self.stop()

    @contextmanager
    def running(self) -> Iterator[int]:
        """Listen until the block ends; yields the port bound."""
        port = self.start()
        try:
            yield port
        finally:
            self.stop()

    @property
    def open_associations(self) -> int:
        with self._lock:
            return sum(1 for state in self._states.values() if not state.ended)

    # -- events ------------------------------------------------------------------------------
    def _on_requested(self, event: evt.Event) -> None:
        assoc = event.assoc
        request = assoc.requestor.primitive
        assert request is not None  # EVT_REQUESTED: the A-ASSOCIATE-RQ has arrived
        called = str(request.called_ae_title).strip()
        calling = str(request.calling_ae_title).strip()
        title = self.settings.ae_titles.get(called)
        if title is None or not title.accepts_calling(calling):
            logger.warning(
                "dicom receiver: association rejected",
                extra={"called": called, "calling": calling, "known_called": title is not None},
            )
            assoc.acse.send_reject(*(_REJECT_CALLED if title is None else _REJECT_CALLING))
            assoc.kill()
            return
        # Answer with the title called (pynetdicom answers with the server's first otherwise).
        assoc.acceptor.ae_title = called
        with self._lock:
            self._states[id(assoc)] = _AssociationState(tenant=title.tenant, called=called, calling=calling)

    def _on_echo(self, event: evt.Event) -> int:
        return STATUS_SUCCESS

    def _on_message(self, event: evt.Event) -> None:
        """A whole DIMSE message was decoded: the next one starts counting from nothing."""
        sock = event.assoc.dul.socket
        if isinstance(sock, _BoundedSocket):
            sock.received_since_message = 0

    def _on_store(self, event: evt.Event) -> Dataset | int:
        with self._lock:
            state = self._states.get(id(event.assoc))
        if state is None:  # never happens for an accepted association; refuse rather than guess
            return _status(STATUS_PROCESSING_FAILURE, "association unknown to the receiver")
        data = event.encoded_dataset()
        try:
            if len(data) > self.settings.max_instance_bytes:
                raise Rejected(
                    ReasonCode.TOO_LARGE,
                    f"the instance is {len(data)} bytes, past the {self.settings.max_instance_bytes} taken",
                )
            with state.lock:
                if state.ended:
                    return _status(STATUS_PROCESSING_FAILURE, "the association has ended")
                if state.transfer is None:
                    state.transfer = self.receiver.open_transfer(
                        state.tenant, TransferSource.C_STORE, actor=f"AE {state.calling}"
                    )
                transfer = state.transfer
            received = transfer.receive(data)
        except Rejected as rejection:
            state.failed += 1
            code = (
                STATUS_OUT_OF_RESOURCES if rejection.reason in _RESOURCE_REASONS else STATUS_CANNOT_UNDERSTAND
            )
            logger.info(
                "dicom receiver: instance refused",
                extra={"tenant": state.tenant, "reason": str(rejection.reason), "status": hex(code)},
            )
            return _status(code, f"{rejection.reason}: {rejection.detail}")
        except Exception:
            state.failed += 1
            logger.exception("dicom receiver: instance not stored", extra={"tenant": state.tenant})
            return _status(STATUS_PROCESSING_FAILURE, "the receiver could not store the instance")
        state.stored += 1
        logger.debug(
            "dicom receiver: instance stored",
            extra={"tenant": state.tenant, "study_id": received.study_id, "new": received.new},
        )
        return STATUS_SUCCESS

    def _on_end(self, event: evt.Event) -> None:
        """Release, abort or the connection closing: the association's transfer ends, once."""
        with self._lock:
            state = self._states.pop(id(event.assoc), None)
        if state is None:
            return
        with state.lock:
            if state.ended:
                return
            state.ended = True
            transfer = state.transfer
        logger.info(
            "dicom receiver: association ended",
            extra={
                "tenant": state.tenant,
                "called": state.called,
                "calling": state.calling,
                "how": event.event.name,
                "stored": state.stored,
                "failed": state.failed,
            },
        )
        if transfer is not None:
            try:
                transfer.end()
            except Exception:
                # The completion sweep still settles the exam after its quiet period (docs/dicom.md).
                logger.exception("dicom receiver: ending the transfer failed", extra={"tenant": state.tenant})
