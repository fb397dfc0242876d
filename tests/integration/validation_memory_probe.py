"""Measures the peak memory of validating one large upload, in a process of its own.

``python -m tests.integration.validation_memory_probe CASE [--max-voxels N]`` builds the upload
(small ones in memory, the large uncompressed one in a temporary file, both in bounded pieces),
resets the process's high-water mark to its resident size and records it (VmHWM), validates
the upload through the streaming check ingest uses (``check_volume_stream``, fed in 1 MiB chunks
as S3's body feeds it), and prints one JSON line: the case, the outcome (``accepted`` or the
reason code) and ``peak_delta_bytes``, how far validation raised the high-water mark.

Cases:

* ``declared_huge``: a 2.1 MB gzip stream declaring 1024 x 1024 x 256 float64 voxels with
  scl_slope=2 (2 GiB of zeros when decoded; over the default voxel limit, so run it with
  ``--max-voxels 268435456``: validation's memory does not depend on the limits);
* ``bomb``: a 16^3 volume whose gzip stream goes on with 4 GiB of zeros;
* ``large_raw``: an uncompressed 512 x 512 x 256 int16 volume (the most voxels the default limits
  take) with scl_slope/scl_inter, 128 MiB, read from a file;
* ``overflow_raw``: the same grid as uint8 with scl_slope=3e38, so that every voxel is scaled in
  float64 and overflows float32: the costliest path per voxel byte (rejected, non_finite_data);
* ``max_extensions``: a 16^3 volume behind one header extension that fills the most vox_offset the
  limits take (16 MiB), which validation reads whole, as nibabel.load does (accepted).

Run by tests/integration/test_validation_memory.py; also runnable by hand for the figures in
docs/pipeline.md.  With a voxelpipe that predates ``check_volume_stream`` it reads the upload
whole and calls ``check_volume`` (for a before/after comparison).
"""

from __future__ import annotations

import argparse
import gc
import json
import re
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import nibabel as nib
import numpy as np
from isal import isal_zlib

from voxelpipe import validation
from voxelpipe.limits import Limits
from voxelpipe.rejections import Rejected

MIB = 1 << 20
CHUNK_BYTES = MIB  # what storage.Storage.iter_chunks reads at a time
CASES = ("declared_huge", "bomb", "large_raw", "overflow_raw", "max_extensions")
LARGE_SHAPE = (512, 512, 256)


def _header_bytes(shape: tuple[int, int, int], dtype: type, slope: float, inter: float) -> bytes:
    """A NIfTI-1 header (and the empty extension flag) for `shape` voxels of `dtype`."""
    header = nib.Nifti1Header()
    header.set_data_shape(shape)
    header.set_data_dtype(dtype)
    header.set_slope_inter(slope, inter)
    header.set_qform(np.eye(4), code=1)
    header.set_sform(np.eye(4), code=1)
    header["vox_offset"] = 352
    return bytes(header.binaryblock) + bytes(4)


def gzip_of_zeros(prefix: bytes, zero_mib: int) -> bytes:
    """`prefix` then `zero_mib` MiB of zeros, gzip-compressed a MiB at a time (ISA-L level 1)."""
    compressor = isal_zlib.compressobj(1, isal_zlib.DEFLATED, 16 + isal_zlib.MAX_WBITS)
    zeros = bytes(MIB)
    parts = [compressor.compress(prefix)]
    parts += [compressor.compress(zeros) for _ in range(zero_mib)]
    parts.append(compressor.flush())
    return b"".join(parts)


def declared_huge() -> bytes:
    shape = (1024, 1024, 256)
    return gzip_of_zeros(_header_bytes(shape, np.float64, 2.0, 0.0), 1024 * 1024 * 256 * 8 // MIB)


def max_extensions() -> bytes:
    """A 16^3 volume behind header extensions that fill the most vox_offset the limits take."""
    offset = Limits().max_vox_offset
    header = nib.Nifti1Header()
    header.set_data_shape((16, 16, 16))
    header.set_data_dtype(np.uint8)
    header["vox_offset"] = offset
    extension = (offset - 352).to_bytes(4, "little") + (4).to_bytes(4, "little")  # esize, ecode
    head = bytes(header.binaryblock) + b"\x01\x00\x00\x00" + extension
    compressor = isal_zlib.compressobj(1, isal_zlib.DEFLATED, 16 + isal_zlib.MAX_WBITS)
    parts = [compressor.compress(head)]
    parts += [compressor.compress(bytes(MIB)) for _ in range((offset - len(head)) // MIB)]
    parts += [compressor.compress(bytes((offset - len(head)) % MIB + 16**3)), compressor.flush()]
    return b"".join(parts)


def bomb() -> bytes:
    head = _header_bytes((16, 16, 16), np.uint8, 1.0, 0.0)
    return gzip_of_zeros(head + bytes(16**3), 4096)


def large_raw(directory: Path, overflow: bool) -> Path:
    path = directory / "large.nii"
    nx, ny, nz = LARGE_SHAPE
    rng = np.random.default_rng(0)
    with path.open("wb") as out:
        if overflow:
            out.write(_header_bytes(LARGE_SHAPE, np.uint8, 3e38, 0.0))
        else:
            out.write(_header_bytes(LARGE_SHAPE, np.int16, 0.5, -100.0))
        for _ in range(nz):  # a slice at a time
            if overflow:
                out.write(rng.integers(1, 256, nx * ny, dtype=np.uint8).tobytes())
            else:
                out.write(rng.integers(-2000, 4000, nx * ny, dtype=np.int16).tobytes())
    return path


def _chunks_of(data: bytes) -> Iterator[bytes]:
    for start in range(0, len(data), CHUNK_BYTES):
        yield data[start : start + CHUNK_BYTES]


def _file_chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as source:
        while chunk := source.read(CHUNK_BYTES):
            yield chunk


def _high_water_bytes() -> int:
    """The process's peak resident size (VmHWM).  Not ru_maxrss: that also carries the parent's
    resident size when it forked this process (exec keeps it), which the reset cannot lower."""
    status = Path("/proc/self/status").read_text()
    match = re.search(r"^VmHWM:\s+(\d+) kB", status, re.MULTILINE)
    assert match is not None
    return int(match.group(1)) * 1024


def _reset_high_water() -> None:
    """Brings the high-water mark down to the resident size now (Linux 4.0+), so that what
    building the input and importing freed again does not hide validation's peak."""
    Path("/proc/self/clear_refs").write_text("5")


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("case", choices=CASES)
    parser.add_argument("--max-voxels", type=int, default=Limits().max_voxels)
    args = parser.parse_args(argv)
    limits = Limits(max_voxels=args.max_voxels)
    with tempfile.TemporaryDirectory() as scratch:
        if args.case in ("large_raw", "overflow_raw"):
            path = large_raw(Path(scratch), overflow=args.case == "overflow_raw")
            size = path.stat().st_size
            chunks: Iterator[bytes] = _file_chunks(path)
        else:
            data = {"declared_huge": declared_huge, "bomb": bomb, "max_extensions": max_extensions}[
                args.case
            ]()
            size = len(data)
            chunks = _chunks_of(data)
        streaming = hasattr(validation, "check_volume_stream")
        gc.collect()
        _reset_high_water()
        baseline = _high_water_bytes()
        try:
            if streaming:
                validation.check_volume_stream(chunks, size, limits)
            else:  # before streaming: ingest read the object whole
                validation.check_volume(b"".join(chunks), limits)
            outcome = "accepted"
        except Rejected as rejected:
            outcome = str(rejected.reason)
        peak = _high_water_bytes()
    print(
        json.dumps(
            {
                "case": args.case,
                "upload_bytes": size,
                "streaming": streaming,
                "outcome": outcome,
                "baseline_bytes": baseline,
                "peak_delta_bytes": peak - baseline,
            }
        )
    )


if __name__ == "__main__":
    main(sys.argv[1:])
