"""The DICOM C-STORE receiver: the container entry point of its Fargate service
(functions/dicom_receiver/Dockerfile, infra/dicom_receiver.py; docs/dicom-receiver.md).

It listens on VOXELPIPE_DICOM_PORT for the AE titles VOXELPIPE_DICOM_AE_TITLES maps to tenants and
hands every instance to the receive use case (voxelpipe.pipeline.receive); SIGTERM (a deployment,
scale-in) stops it: open associations are aborted, which ends their transfers.
"""

from __future__ import annotations

import signal
import sys
import threading
from types import FrameType

from voxelpipe.adapters import secrets
from voxelpipe.adapters.storage import Storage
from voxelpipe.adapters.study_table import DynamoStudyStore
from voxelpipe.adapters.transfers import DynamoTransferStore
from voxelpipe.dimse.scp import StoreScp
from voxelpipe.dimse.settings import InvalidReceiverSettings, ReceiverSettings
from voxelpipe.limits import Limits
from voxelpipe.observability import logger
from voxelpipe.pipeline.receive import InstanceReceiver


def main() -> int:
    try:
        settings = ReceiverSettings.from_environment()
    except InvalidReceiverSettings as error:
        logger.error("dicom receiver: invalid settings", extra={"error": str(error)})
        return 2
    receiver = InstanceReceiver(
        DynamoStudyStore(),
        Storage.from_environment(),
        DynamoTransferStore(),
        Limits.from_environment(),
        pseudonyms=secrets.pseudonyms(),
    )
    scp = StoreScp(receiver, settings)

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        logger.info("SIGTERM: stopping the dicom receiver")
        # Not in the handler itself: it interrupts the main thread, which may hold a lock.
        threading.Thread(target=scp.stop, name="sigterm").start()

    signal.signal(signal.SIGTERM, on_sigterm)
    scp.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
