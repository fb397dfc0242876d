"""What the pipeline accepts: sizes and counts every check reads, built from the environment once."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from voxelpipe.wiring import DEFAULT_MAX_UPLOAD_BYTES, EnvVar

__all__ = ["HEADER_RANGE_BYTES", "Limits"]

# How much of an object to range-read before reading it whole: a NIfTI header needs 348/540
# decoded bytes, which even a poorly compressed .nii.gz yields from far less, and a DICOM header
# rarely runs past it; 64 KiB is one cheap GET.
HEADER_RANGE_BYTES: Final = 65536


@dataclass(frozen=True)
class Limits:
    """What the pipeline accepts; the defaults are sized for a 10 GB Lambda."""

    # Largest object accepted, compressed or not: also bounds the memory the upload itself takes.
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES
    # Largest volume, in voxels: 2**28 (e.g. 1024 x 1024 x 256, or 645**3).  The decoded voxels plus
    # a float64 copy (get_fdata) plus the upload stay near 6 GiB at the limit, leaving room in
    # 10 GB for an analysis' working arrays.
    max_voxels: int = 2**28
    # Largest extent of any spatial axis: beyond anything a scanner or microscope stack we take
    # produces, and it stops absurd shapes that a voxel count alone would let through (2 x 2 x 2**26).
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
