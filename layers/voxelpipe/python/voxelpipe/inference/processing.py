"""Before and after the network: the prepared volume onto the model's grid, intensities
normalised (a whole-volume model's then centre-cropped or zero-padded to its `input_shape`); the
label map back onto the input's own grid, with its volumes.

The model's grid is the canonical volume's voxels reordered to the spec's orientation (exact),
then, only if the voxel size differs from the spec's spacing, resampled (trilinear) over the same
field of view. The label map returns to the upload's grid (`original_affine`, `original_shape`)
by `segmentation.to_grid`: an exact reordering when the model's grid is the input's voxels,
nearest-neighbour otherwise.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from voxelpipe.inference.spec import ModelSpec, Normalization
from voxelpipe.nifti import to_nifti_bytes
from voxelpipe.segmentation import to_grid
from voxelpipe.segmentation.resample import resample
from voxelpipe.volume import Image, new_image, reoriented, voxel_data, voxel_sizes

FloatArray = npt.NDArray[np.float32]
_SPACING_TOLERANCE_MM = 1e-3


@dataclass(frozen=True)
class ModelInput:
    """One volume on the model's grid, normalised, with what is needed to go back."""

    data: FloatArray  # (X, Y, Z), float32
    affine: npt.NDArray[np.float64]  # the model grid's
    original_affine: npt.NDArray[np.float64]
    original_shape: tuple[int, int, int]


def model_grid(
    image: Image, spec: ModelSpec, device: str | torch.device | None = "cpu"
) -> tuple[FloatArray, npt.NDArray[np.float64]]:
    """The image's intensities on the spec's grid (orientation, then spacing), and that grid's affine."""
    oriented = reoriented(image, spec.orientation)
    data = voxel_data(oriented)
    affine = np.asarray(oriented.affine, dtype=np.float64)
    zooms = voxel_sizes(affine)
    spacing = np.asarray(spec.spacing_mm, dtype=np.float64)
    if np.allclose(zooms, spacing, atol=_SPACING_TOLERANCE_MM):
        return np.ascontiguousarray(data, dtype=np.float32), affine
    shape = np.asarray(data.shape[:3], dtype=np.float64)
    new_shape = np.maximum(np.rint(shape * zooms / spacing), 1).astype(int)
    target = np.eye(4)
    target[:3, :3] = affine[:3, :3] / zooms * spacing  # same directions, the spec's voxel size
    # Same field-of-view centre.
    centre = affine[:3, :3] @ ((shape - 1) / 2) + affine[:3, 3]
    target[:3, 3] = centre - target[:3, :3] @ ((new_shape - 1) / 2)
    sampled = resample(data, affine, target, [int(n) for n in new_shape], "linear", device)
    return np.ascontiguousarray(sampled, dtype=np.float32), target


def normalise(data: FloatArray, normalization: Normalization) -> FloatArray:
    """A normalised copy of `data` (see `Normalization`)."""
    out = np.array(data, dtype=np.float32, copy=True)
    method = normalization.method
    if method == "none":
        return out
    if method == "window":
        assert normalization.window is not None
        low, high = normalization.window
        np.clip(out, low, high, out=out)
        out -= low
        out /= high - low
        return out
    mask = out != 0 if normalization.nonzero else np.ones(out.shape, dtype=bool)
    if not mask.any():
        mask = np.ones(out.shape, dtype=bool)  # an empty foreground: use everything
    values = out[mask]
    if normalization.clip_percentiles is not None:
        low, high = np.percentile(values, normalization.clip_percentiles)
        values = np.clip(values, low, high)
    if method == "zscore":
        std = float(values.std())
        values = (values - float(values.mean())) / (std if std > 0 else 1.0)
    else:  # minmax
        low, high = float(values.min()), float(values.max())
        values = (values - low) / (high - low) if high > low else np.zeros_like(values)
    out[mask] = values
    return out


def fit_to_shape(
    data: FloatArray, affine: npt.ArrayLike, shape: Sequence[int]
) -> tuple[FloatArray, npt.NDArray[np.float64]]:
    """`data` centre-cropped or zero-padded to `shape` (per axis: the extra split evenly, one more
    after than before when odd), and the affine of that grid."""
    out = np.zeros(tuple(int(n) for n in shape), dtype=np.float32)
    source: list[slice] = []
    target: list[slice] = []
    shift = np.zeros(3)  # this grid's voxel 0 in the original's voxels
    for axis, (have, want) in enumerate(zip(data.shape[:3], shape, strict=True)):
        if have >= want:
            start = (have - want) // 2
            source.append(slice(start, start + want))
            target.append(slice(0, want))
            shift[axis] = start
        else:
            before = (want - have) // 2
            source.append(slice(0, have))
            target.append(slice(before, before + have))
            shift[axis] = -before
    out[tuple(target)] = data[tuple(source)]
    moved = np.array(affine, dtype=np.float64, copy=True)
    moved[:3, 3] += moved[:3, :3] @ shift
    return out, moved


def preprocess(
    image: Image,
    spec: ModelSpec,
    original_affine: npt.ArrayLike,
    original_shape: Sequence[int],
    device: str | torch.device | None = "cpu",
) -> ModelInput:
    data, affine = model_grid(image, spec, device)
    data = normalise(data, spec.normalization)
    if spec.input_shape is not None:  # after normalising: the padding is background (0)
        data, affine = fit_to_shape(data, affine, spec.input_shape)
    shape = tuple(int(n) for n in original_shape[:3])
    return ModelInput(
        data=data,
        affine=affine,
        original_affine=np.asarray(original_affine, dtype=np.float64),
        original_shape=(shape[0], shape[1], shape[2]),
    )


def label_dtype(spec: ModelSpec) -> type[np.integer[Any]]:
    return np.uint8 if spec.out_channels <= 256 else np.int16


def to_input_grid(
    labels: npt.NDArray[np.integer[Any]], inp: ModelInput, spec: ModelSpec
) -> npt.NDArray[np.integer[Any]]:
    """The model-grid label map on the input's own grid (exact reordering, else nearest)."""
    typed = np.asarray(labels, dtype=label_dtype(spec))
    moved = to_grid(typed, inp.affine, inp.original_affine, inp.original_shape, "nearest", "cpu")
    return np.asarray(moved, dtype=label_dtype(spec))


def label_measures(
    labels: npt.NDArray[np.integer[Any]], affine: npt.ArrayLike, spec: ModelSpec
) -> dict[str, Any]:
    """Per label (background left out): its value, voxel count and volume in mL, on `affine`'s grid."""
    voxel_ml = abs(float(np.linalg.det(np.asarray(affine, dtype=np.float64)[:3, :3]))) / 1000.0
    counts = np.bincount(np.asarray(labels, dtype=np.int64).ravel(), minlength=spec.out_channels)
    return {
        "labels": {
            name: {
                "value": value,
                "voxels": int(counts[value]),
                "volume_ml": round(int(counts[value]) * voxel_ml, 4),
            }
            for value, name in spec.labels.items()
            if value != 0
        },
        "voxel_volume_ml": round(voxel_ml, 9),
        "shape": [int(n) for n in labels.shape],
    }


def label_artifact(labels: npt.NDArray[np.integer[Any]], affine: npt.ArrayLike) -> bytes:
    """The label map as gzipped NIfTI-1 in a fresh header (geometry, type and mm units only)."""
    return to_nifti_bytes(new_image(labels, affine), compress=True)
