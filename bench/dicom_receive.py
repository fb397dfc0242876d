"""Receiving an exam over DIMSE C-STORE: voxelpipe's receiver (the pynetdicom SCP with its header
checks and writes through `pipeline.receive`, to in-memory storage) against Orthanc's C-STORE SCP
(Debian's, writing to its own disk store), fed the same instances by the same pynetdicom SCU in
the same run.

    python bench/dicom_receive.py [--instances N] [--repeat R]

The exam is N slices of a synthetic 256x256 MR series (tests/fixtures/dicom.py), sent in one
association. Each figure is the best of R sends; the ratio is Orthanc's time / ours (above 1: ours
is faster). Not like for like: ours stops at the in-memory write (in AWS the S3 PUT follows, and
ingest's checks run in Lambda after it), while Orthanc parses, indexes in SQLite and writes to
disk with its default fsync. It bounds the receiver's own cost per instance; it is not a claim
that voxelpipe stores faster than a PACS. Exits 0 whatever the figures; skips Orthanc if it is
not installed.
"""

from __future__ import annotations

import argparse
import io
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pydicom
from pynetdicom import AE
from pynetdicom.sop_class import MRImageStorage  # type: ignore[attr-defined]

from tests.fakes import InMemoryStorage, InMemoryStudyStore, InMemoryTransferStore
from tests.fixtures.dicom import make_series
from tests.fixtures.orthanc import DICOMWEB_PLUGIN, orthanc_server
from voxelpipe.dimse.scp import StoreScp
from voxelpipe.dimse.settings import AeTitle, ReceiverSettings
from voxelpipe.limits import Limits
from voxelpipe.pipeline.receive import InstanceReceiver
from voxelpipe.pseudonyms import Pseudonyms


def send(port: int, called: str, datasets: Sequence[pydicom.Dataset]) -> float:
    """Seconds to send every dataset in one association (from request to release)."""
    ae = AE(ae_title="BENCH")
    ae.add_requested_context(MRImageStorage)
    started = time.perf_counter()
    assoc = ae.associate("127.0.0.1", port, ae_title=called)
    assert assoc.is_established, f"no association with {called} on {port}"
    for ds in datasets:
        status = assoc.send_c_store(ds)
        assert status and status.Status == 0, f"{called} refused an instance: {status}"
    assoc.release()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=120)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    series = make_series(args.instances, 256, 256, phi=True)
    datasets = [pydicom.dcmread(io.BytesIO(data)) for data in series.instances]
    megabytes = sum(len(data) for data in series.instances) / 1e6
    print(
        f"{args.instances} MR instances, 256x256, {megabytes:.1f} MB, one association; best of {args.repeat}"
    )

    store, storage = InMemoryStudyStore(), InMemoryStorage()
    receiver = InstanceReceiver(
        store, storage, InMemoryTransferStore(), Limits(), pseudonyms=Pseudonyms(b"bench-secret-0123456789")
    )
    scp = StoreScp(
        receiver, ReceiverSettings(ae_titles={"VOXELPIPE": AeTitle("bench")}, port=0), host="127.0.0.1"
    )
    port = scp.start()
    try:
        ours = min(send(port, "VOXELPIPE", datasets) for _ in range(args.repeat))
    finally:
        scp.stop()
    print(f"voxelpipe receiver   {ours:7.3f} s   {args.instances / ours:8.1f} instances/s")

    if shutil.which("Orthanc") is None or not DICOMWEB_PLUGIN.exists():
        print("Orthanc              not installed (apt-get install orthanc orthanc-dicomweb)")
        return
    with tempfile.TemporaryDirectory() as tmp, orthanc_server(Path(tmp)) as orthanc:
        theirs = min(send(orthanc.dicom_port, "ORTHANC", datasets) for _ in range(args.repeat))
    print(f"Orthanc (peer)       {theirs:7.3f} s   {args.instances / theirs:8.1f} instances/s")
    print(
        f"ratio Orthanc / voxelpipe: {theirs / ours:.2f} (ours to memory, Orthanc to disk: see the docstring)"
    )


if __name__ == "__main__":
    main()
