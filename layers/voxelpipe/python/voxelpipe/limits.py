"""What the pipeline accepts: sizes and counts every check reads, built from the environment once.

The limits are what keep every step inside its Lambda's memory (function_specs), so that an
accepted upload never fails for its size.  Measured (``python bench/step_memory.py``: each
step's peak resident size over its runtime, per voxel, in a fresh process; and
tests/integration/test_validation_memory.py for ingest):

* Ingest (3008 MB) streams validation (voxelpipe.validation.check_volume_stream): 1 MiB reads,
  incremental gzip decoding, values checked 1 MiB of voxels at a time, the header's extensions
  read whole as nibabel reads them (at most max_vox_offset).  Its peak does not depend on the
  upload: 2-34 MiB measured (a 2.1 MB gzip declaring 2 GiB of float64 voxels: 5 MiB, it was 4.0
  GiB when validation decoded whole; a gzip bomb: 2 MiB; 128 MiB uncompressed: 11 MiB; every
  voxel overflowing: 15 MiB; 16 MiB of extensions: 34 MiB), under VALIDATION_PEAK_BYTES whatever
  the upload.
* Prepare (4096 MB) decodes the upload whole: at most ~24 bytes a voxel of work (a scaled
  float64 or int64 upload: the decoded voxels 8, nibabel's float64 scaling 8, the float32
  canonical volume 4, canonical.nii's bytes 4), plus the upload it read (at most
  max_upload_bytes; ~8 bytes a voxel for a float64 .nii.gz that barely compresses).  At
  max_voxels: 1.5 GiB + 1 GiB + ~0.1 GiB of runtime, 2.7 GiB of its 4 GiB.
* RunAnalysis (10240 MB) reads canonical.nii (at most 8 bytes a voxel) and runs one analysis:
  qc ~9-13 bytes a voxel; tissue-seg ~85 bytes a voxel and ~0.35 GB when the brain fills the
  field of view (96 a voxel measured at 512 x 256 x 256 with it filling ~85%; 58 for a
  head-sized ellipsoid).  At max_voxels: ~6.1 GiB + ~0.3 GiB of runtime (torch), of its 10 GiB.
  At 2**27 voxels tissue-seg would need ~11.5 GiB, past Lambda's largest function: hence 2**26.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from voxelpipe.wiring import DEFAULT_MAX_UPLOAD_BYTES, EnvVar

__all__ = ["HEADER_RANGE_BYTES", "VALIDATION_PEAK_BYTES", "Limits"]

# How much of an object to range-read before reading it whole: a NIfTI header needs 348/540
# decoded bytes, which even a poorly compressed .nii.gz yields from far less, and a DICOM header
# rarely runs past it; 64 KiB is one cheap GET.
HEADER_RANGE_BYTES: Final = 65536

# The most that validating one upload adds to the ingest function's peak memory, whatever the
# upload (bombs, the largest declared volumes, any limits): a few 1 MiB pieces and their float
# copies, and the header's extensions (at most max_vox_offset, 16 MiB) while nibabel reads them,
# are all it holds (34 MiB measured at worst).  tests/integration/test_validation_memory.py holds
# it to this.
VALIDATION_PEAK_BYTES: Final = 64 * 1024 * 1024


@dataclass(frozen=True)
class Limits:
    """What the pipeline accepts; the defaults keep Prepare and RunAnalysis inside their memory
    for any accepted upload (see the module's docstring for the figures)."""

    # Largest object accepted, compressed or not: also bounds the memory the upload itself takes
    # in Prepare, which holds it whole (1 GiB: twice the largest volume's 512 MiB of float64).
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES
    # Largest volume, in voxels: 2**26 (e.g. 512 x 512 x 256, or 406**3), what tissue-seg can
    # segment in RunAnalysis's 10 GiB whatever the volume holds.
    max_voxels: int = 2**26
    # Largest extent of any spatial axis: beyond anything a scanner or microscope stack we take
    # produces, and it stops absurd shapes that a voxel count alone would let through (2 x 2 x 2**24).
    max_dim: int = 4096
    # gzip expansion (decoded / uploaded bytes) above which output beyond the declared size counts
    # as a bomb.  Scans compress 2-10:1, masks up to a few hundred:1, deflate's ceiling is ~1032:1.
    max_expansion_ratio: float = 100.0
    # Largest vox_offset (header + extensions): real files use a few KiB; with max_voxels this
    # bounds the decoded size before anything is decoded.
    max_vox_offset: int = 16 * 1024 * 1024

    @property
    def max_declared_bytes(self) -> int:
        """The most decoded bytes a volume within these limits can declare (8-byte voxels)."""
        return self.max_vox_offset + self.max_voxels * 8

    @classmethod
    def from_environment(cls, env: Mapping[str, str] | None = None) -> Limits:
        """The limits a function was deployed with (VOXELPIPE_MAX_UPLOAD_BYTES); the rest default."""
        env = os.environ if env is None else env
        return cls(max_upload_bytes=int(env.get(EnvVar.MAX_UPLOAD_BYTES) or DEFAULT_MAX_UPLOAD_BYTES))
