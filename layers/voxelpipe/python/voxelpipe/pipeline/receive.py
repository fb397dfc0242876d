"""Instances that arrive over the network (DICOMweb STOW-RS, DIMSE C-STORE) join their exam's study.

Whoever receives them — the API's STOW-RS route, the C-STORE receiver — opens a `Transfer` for each
request or association and hands it every object. An object is checked from its header (it must
be an image DICOM can describe, within the upload limit) and written to the uploads of the study
its Study Instance UID names, where the same ingest as for every upload records it; the study is
created with the first instance. The object's name is its pseudonymous SOP Instance UID: no
identifier leaves this boundary in a name. When the transfer ends it is noted; the exam is
completed later, once every transfer that carried it has ended and a quiet period has passed with
no new instance (`pipeline.transfers`, docs/dicom.md).
"""

from __future__ import annotations

import secrets
import threading
from dataclasses import dataclass
from enum import StrEnum
from types import TracebackType

from voxelpipe import tracking
from voxelpipe.analyses import DEFAULT_ANALYSES
from voxelpipe.keys import UploadKey
from voxelpipe.limits import Limits
from voxelpipe.messages import Priority
from voxelpipe.observability import logger
from voxelpipe.pipeline.lifecycle import uid_map
from voxelpipe.ports import ObjectStorage, StudyStore, TransferStore
from voxelpipe.pseudonyms import Pseudonyms
from voxelpipe.records import ObjectRecord, StudyRecord
from voxelpipe.rejections import ReasonCode, Rejected
from voxelpipe.status import StudyStatus

RECEIVED_PREFIX = "received#"  # objects-table rows: one per distinct SOP instance a network sender wrote


class TransferSource(StrEnum):
    """How a study's instances arrived (StudyRecord.source)."""

    UPLOAD = "upload"  # POST /studies, presigned uploads, a declared manifest
    STOW = "stow"  # DICOMweb STOW-RS
    C_STORE = "c-store"  # DIMSE C-STORE
    ROUTED = "routed"  # a further selected series of an exam, copied to a study of its own


@dataclass(frozen=True)
class ReceivedInstance:
    """Where an instance went. The UIDs are the pseudonymous ones the de-identified copies carry."""

    study_id: str
    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str
    sop_class_uid: str
    new: bool  # False: this SOP instance was received before (written again: the sender resent it)


def exam_study_id(pseudonyms: Pseudonyms, tenant: str, study_instance_uid: str, generation: int = 0) -> str:
    """The study a network exam lands in: the same for every transfer of that exam, so instances
    sent over several associations meet. A new generation after the study was deleted. An HMAC
    under the deployment's pseudonym secret: a study id cannot confirm a guessed Study Instance UID."""
    return pseudonyms.exam_study_id(tenant, study_instance_uid, generation)


class InstanceReceiver:
    """Takes objects from network senders into the ingest path (the adapters are the pipeline's)."""

    def __init__(
        self,
        store: StudyStore,
        storage: ObjectStorage,
        transfers: TransferStore,
        limits: Limits,
        *,
        pseudonyms: Pseudonyms,
    ) -> None:
        self.store = store
        self.storage = storage
        self.transfers = transfers
        self.limits = limits
        self.pseudonyms = pseudonyms

    def open_transfer(self, tenant: str, source: TransferSource, actor: str | None = None) -> Transfer:
        """One request or association; `actor` names the sender in the audit trail (the caller, the
        calling AE title)."""
        return Transfer(self, tenant, source, actor)

    def exam_for(self, tenant: str, study_instance_uid: str, source: TransferSource) -> StudyRecord:
        """The exam's study, created with its first instance (a deleted one is never reused)."""
        generation = 0
        while True:
            study_id = exam_study_id(self.pseudonyms, tenant, study_instance_uid, generation)
            study = self.store.get_study(study_id)
            if study is None:
                tracking.create_study(
                    self.store,
                    study_id,
                    tenant,
                    analyses=DEFAULT_ANALYSES,
                    priority=Priority.NORMAL.value,
                    input_format="dicom",
                    uid_key=secrets.token_hex(32),
                    source=source.value,
                )
                # Another receiver may have created it first: theirs stands.
                study = self.store.get_study(study_id)
                assert study is not None
            if study.tenant != tenant:  # a hash collision across tenants: never share a study
                raise Rejected(ReasonCode.INVALID_NAME, "the exam cannot be filed for this tenant")
            if study.status != StudyStatus.DELETED:
                return study
            generation += 1


class Transfer:
    """One request or association: the objects it carries, and its end.

    Thread-safe: a C-STORE association may deliver on several threads. Use as a context manager, or
    call `end()` (idempotent) when the request or association ends, however it ends.
    """

    def __init__(
        self, receiver: InstanceReceiver, tenant: str, source: TransferSource, actor: str | None = None
    ) -> None:
        self._receiver = receiver
        self.tenant = tenant
        self.source = source
        self.actor = actor or source.value
        self._studies: dict[str, int] = {}  # study id -> instances this transfer wrote to it
        self._lock = threading.Lock()
        self._ended = False

    def receive(self, data: bytes) -> ReceivedInstance:
        """Check one DICOM Part 10 object and write it to its exam's uploads; Rejected if unusable."""
        receiver = self._receiver
        if len(data) > receiver.limits.max_upload_bytes:
            raise Rejected(
                ReasonCode.TOO_LARGE,
                f"the object is {len(data)} bytes; the limit is {receiver.limits.max_upload_bytes}",
            )
        # Here, not at the top: the API ships pydicom in its layers, but only STOW-RS needs it.
        from voxelpipe.dicom import read_instance_header

        summary = read_instance_header(data)  # Rejected: not DICOM, no pixels, truncated, ...
        study = receiver.exam_for(self.tenant, summary.study_instance_uid, self.source)
        uids = uid_map(study)
        sop = uids(summary.sop_instance_uid)
        key = UploadKey(self.tenant, study.study_id, f"{sop}.dcm").key
        new = receiver.store.record_object(ObjectRecord(study.study_id, RECEIVED_PREFIX + sop, source=key))
        receiver.storage.write(key, data, "application/dicom")
        # Counted after the write: a count without its object would hold the exam back for ever.
        if new:
            receiver.store.count_received(study.study_id)
        with self._lock:
            opened = study.study_id not in self._studies
            self._studies[study.study_id] = self._studies.get(study.study_id, 0) + 1
        receiver.transfers.note_received(
            study.study_id, self.tenant, self.source.value, at=tracking.now(), opened=opened
        )
        return ReceivedInstance(
            study_id=study.study_id,
            study_instance_uid=uids(summary.study_instance_uid),
            series_instance_uid=uids(summary.series_instance_uid),
            sop_instance_uid=sop,
            sop_class_uid=summary.sop_class_uid,
            new=new,
        )

    @property
    def study_ids(self) -> list[str]:
        with self._lock:
            return sorted(self._studies)

    def end(self) -> None:
        """Note the end of the transfer for every exam it carried (once)."""
        with self._lock:
            if self._ended:
                return
            self._ended = True
            studies = dict(self._studies)
        at = tracking.now()
        for study_id, instances in sorted(studies.items()):
            self._receiver.transfers.note_ended(study_id, at)
            tracking.audit(
                self._receiver.store,
                study_id,
                "instances_received",
                actor=self.actor,
                source=self.source.value,
                detail={"instances": instances},
            )
        logger.info(
            "transfer ended",
            extra={"source": self.source.value, "tenant": self.tenant, "studies": sorted(studies)},
        )

    def __enter__(self) -> Transfer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.end()
