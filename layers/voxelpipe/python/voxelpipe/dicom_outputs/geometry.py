"""Label maps (NIfTI, RAS+ world) carried back onto the source DICOM frames (LPS, frame by frame).

A label voxel is taken for each pixel of each source frame: the pixel's centre in patient
coordinates (Image Position + column x row cosine x column spacing + row x column cosine x row
spacing, LPS) goes to RAS (x and y change sign) and through the inverse of the label map's affine
to a voxel index, rounded (nearest neighbour). When the label map lies on the source's own grid
(Prepare assembled the volume from these frames and only reordered its axes) every pixel lands on
a voxel centre, so the frames hold exactly the label map's values; a pixel outside the map is 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from pydicom.dataset import Dataset

_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])


@dataclass(frozen=True)
class FrameGeometry:
    """One source frame: where its first pixel lies (LPS, mm), its row and column cosines, its
    pixel spacing (between rows, between columns) and its size."""

    position: npt.NDArray[np.float64]
    row_cosine: npt.NDArray[np.float64]  # the direction along a row (increasing column)
    column_cosine: npt.NDArray[np.float64]  # the direction down a column (increasing row)
    spacing: tuple[float, float]
    rows: int
    columns: int


def _floats(value: Any) -> npt.NDArray[np.float64]:
    return np.asarray([float(v) for v in value], dtype=np.float64)


def frame_geometry(dataset: Dataset) -> FrameGeometry:
    """A single-frame image's plane (Image Plane module). ValueError when it has none."""
    for keyword in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing"):
        if keyword not in dataset:
            raise ValueError(f"a source image has no {keyword}: its frames cannot be placed")
    cosines = _floats(dataset.ImageOrientationPatient)
    spacing = _floats(dataset.PixelSpacing)
    return FrameGeometry(
        position=_floats(dataset.ImagePositionPatient),
        row_cosine=cosines[:3],
        column_cosine=cosines[3:],
        spacing=(float(spacing[0]), float(spacing[1])),
        rows=int(dataset.Rows),
        columns=int(dataset.Columns),
    )


def labels_on_frame(
    labels: npt.NDArray[np.integer[Any]], affine: npt.ArrayLike, frame: FrameGeometry
) -> npt.NDArray[np.integer[Any]]:
    """The label map's values at the frame's pixel centres, (rows, columns), nearest neighbour."""
    rows, columns = np.meshgrid(np.arange(frame.rows), np.arange(frame.columns), indexing="ij")
    lps = (
        frame.position[:, None, None]
        + frame.row_cosine[:, None, None] * (columns * frame.spacing[1])[None]
        + frame.column_cosine[:, None, None] * (rows * frame.spacing[0])[None]
    )
    ras = np.tensordot(_LPS_TO_RAS, lps, axes=1)
    world_to_voxel = np.linalg.inv(np.asarray(affine, dtype=np.float64))
    voxel = np.tensordot(world_to_voxel[:3, :3], ras, axes=1) + world_to_voxel[:3, 3, None, None]
    index = np.rint(voxel).astype(np.int64)
    shape = np.asarray(labels.shape[:3])[:, None, None]
    inside = ((index >= 0) & (index < shape)).all(axis=0)
    out = np.zeros((frame.rows, frame.columns), dtype=labels.dtype)
    i, j, k = (index[axis][inside] for axis in range(3))
    out[inside] = labels[i, j, k]
    return out


def labels_on_frames(
    labels: npt.NDArray[np.integer[Any]], affine: npt.ArrayLike, frames: Sequence[FrameGeometry]
) -> npt.NDArray[np.integer[Any]]:
    """The label map on each frame, stacked: (frames, rows, columns)."""
    return np.stack([labels_on_frame(labels, affine, frame) for frame in frames])
