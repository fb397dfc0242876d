"""The DICOM C-STORE receiver in the local cloud: the same SCP (voxelpipe.dimse) and receive use
case as the Fargate service, in a thread, acting as the service's task role (infra/local/iam.py), so
that a grant missing from infra/access.py fails here as it would in AWS. `voxelpipe serve
--dicom-port` and the end-to-end tests run it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import TYPE_CHECKING

from voxelpipe.adapters import secrets
from voxelpipe.adapters.storage import Storage
from voxelpipe.adapters.study_table import DynamoStudyStore
from voxelpipe.adapters.transfers import DynamoTransferStore
from voxelpipe.dimse.scp import InstanceReceiverPort, StoreScp, Transfer
from voxelpipe.dimse.settings import AeTitle, ReceiverSettings
from voxelpipe.function_specs import DICOM_RECEIVER
from voxelpipe.limits import Limits
from voxelpipe.pipeline.receive import InstanceReceiver, ReceivedInstance, TransferSource

if TYPE_CHECKING:
    from infra.local.cloud import LocalCloud

Acting = Callable[[], AbstractContextManager[None]]


class _ActingTransfer:
    def __init__(self, transfer: Transfer, acting: Acting) -> None:
        self._transfer = transfer
        self._acting = acting

    def receive(self, data: bytes) -> ReceivedInstance:
        with self._acting():
            return self._transfer.receive(data)

    def end(self) -> None:
        with self._acting():
            self._transfer.end()


class ActingReceiver:
    """A receiver whose every call acts as a principal: pynetdicom calls it on threads of its own,
    which do not inherit the caller's (context-variable) principal."""

    def __init__(self, receiver: InstanceReceiverPort, acting: Acting) -> None:
        self._receiver = receiver
        self._acting = acting

    def open_transfer(self, tenant: str, source: TransferSource, actor: str | None = None) -> Transfer:
        with self._acting():
            return _ActingTransfer(self._receiver.open_transfer(tenant, source, actor), self._acting)


@contextmanager
def receiving_dicom(
    cloud: LocalCloud,
    ae_titles: dict[str, AeTitle],
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    settings: ReceiverSettings | None = None,
) -> Iterator[int]:
    """Run the C-STORE receiver against `cloud` until the block ends; yields the port bound (0: any
    free port). `settings` (their AE titles and port replaced by these) for other timeouts."""
    base = settings or ReceiverSettings(ae_titles=ae_titles)
    settings = ReceiverSettings(**{**base.__dict__, "ae_titles": ae_titles, "port": port})
    with cloud.acting_as(DICOM_RECEIVER.name):  # the secret is read as the service's task role
        pseudonyms = secrets.pseudonyms()
    receiver = InstanceReceiver(
        DynamoStudyStore(),
        Storage.from_environment(),
        DynamoTransferStore(),
        Limits.from_environment(),
        pseudonyms=pseudonyms,
    )
    scp = StoreScp(
        ActingReceiver(receiver, lambda: cloud.acting_as(DICOM_RECEIVER.name)), settings, host=host
    )
    with scp.running() as bound:
        yield bound
