"""Moving volumes between voxel grids: exactly when one grid is a reordering of the other, else by
interpolation in world coordinates (labels nearest, probabilities linear), in torch.

The analyses see the study's volume in canonical RAS, which is the input's own voxels with axes
permuted and flipped (`voxelpipe.volume.canonical`): going back is then an exact reordering, with
no interpolation at all. A grid that is not a reordering (another voxel size, a different
obliquity) is resampled: each target voxel's centre is mapped through the two affines into the
source grid and sampled there; outside the source grid counts as 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import numpy.typing as npt
import torch

from voxelpipe.segmentation.device import resolve_device

Order = Literal["nearest", "linear"]
AxisMap = tuple[tuple[int, int, int], tuple[bool, bool, bool]]

_EXACT_TOLERANCE = 1e-3  # voxels: affines agreeing this closely describe the same grid
_SLAB_VOXELS = 1 << 21  # target voxels sampled per step (bounds the sampling grid's memory)


def axis_map(
    source_affine: npt.ArrayLike,
    source_shape: Sequence[int],
    target_affine: npt.ArrayLike,
    target_shape: Sequence[int],
) -> AxisMap | None:
    """How the target grid's voxel axes are the source's, if they are a pure reordering.

    Returns (perm, flips): target axis a runs along source axis perm[a], reversed where flips[a];
    None when the target voxels are not exactly source voxels (then interpolate).
    """
    src = np.asarray(source_affine, dtype=np.float64)
    tgt = np.asarray(target_affine, dtype=np.float64)
    # Target voxel -> source voxel.
    mapping = np.linalg.solve(src, tgt)
    linear, offset = mapping[:3, :3], mapping[:3, 3]
    rounded = np.round(linear)
    if not np.allclose(linear, rounded, atol=_EXACT_TOLERANCE) or not np.allclose(
        offset, np.round(offset), atol=_EXACT_TOLERANCE
    ):
        return None
    if sorted(np.abs(rounded).sum(axis=0).tolist()) != [1.0, 1.0, 1.0] or sorted(
        np.abs(rounded).sum(axis=1).tolist()
    ) != [1.0, 1.0, 1.0]:
        return None
    perm = [int(np.flatnonzero(rounded[:, a])[0]) for a in range(3)]
    flips = [bool(rounded[perm[a], a] < 0) for a in range(3)]
    for a in range(3):
        s = perm[a]
        n_target = int(target_shape[a])
        if int(source_shape[s]) != n_target:
            return None
        start = round(float(offset[s]))
        # Target index 0 must land on source index 0 (or the last one, flipped).
        if start != (int(source_shape[s]) - 1 if flips[a] else 0):
            return None
    return (perm[0], perm[1], perm[2]), (flips[0], flips[1], flips[2])


def apply_axis_map(array: npt.NDArray[np.generic], mapping: AxisMap) -> npt.NDArray[np.generic]:
    """`array` (3-D, or (C, X, Y, Z)) reordered onto the target grid of `axis_map`."""
    perm, flips = mapping
    lead = array.ndim - 3
    axes = list(range(lead)) + [lead + p for p in perm]
    out = np.transpose(array, axes)
    index = tuple([slice(None)] * lead + [slice(None, None, -1) if f else slice(None) for f in flips])
    return np.ascontiguousarray(out[index])


def resample(
    array: npt.NDArray[np.generic],
    source_affine: npt.ArrayLike,
    target_affine: npt.ArrayLike,
    target_shape: Sequence[int],
    order: Order,
    device: str | torch.device | None = None,
) -> npt.NDArray[np.generic]:
    """`array` (3-D, or (C, X, Y, Z) channels) sampled at the target grid's voxel centres.

    "nearest" keeps values as they are (for labels and masks); "linear" is trilinear (for
    probabilities and intensities). Output dtype is the input's (rounded for integer "linear").
    """
    if order not in ("nearest", "linear"):
        raise ValueError("order must be 'nearest' or 'linear'")
    dev = resolve_device(device)
    channels_first = array.ndim == 4
    data = array if channels_first else array[None]
    source = torch.as_tensor(np.ascontiguousarray(data), device=dev).float()[None]  # (1, C, X, Y, Z)
    sx, sy, sz = (int(n) for n in data.shape[1:])
    tx, ty, tz = (int(n) for n in target_shape)
    to_source = np.linalg.solve(np.asarray(source_affine, np.float64), np.asarray(target_affine, np.float64))
    # Normalised source coordinates (align_corners=True: -1 and 1 are the first and last centres).
    norm = np.diag([2.0 / max(n - 1, 1) for n in (sx, sy, sz)] + [1.0])
    norm[:3, 3] = [-1.0 if n > 1 else 0.0 for n in (sx, sy, sz)]
    affine = torch.as_tensor(norm @ to_source, dtype=torch.float64, device=dev)
    out = np.zeros((data.shape[0], tx, ty, tz), dtype=np.float32)
    jy, jz = torch.meshgrid(
        torch.arange(ty, dtype=torch.float64, device=dev),
        torch.arange(tz, dtype=torch.float64, device=dev),
        indexing="ij",
    )
    slab = max(1, _SLAB_VOXELS // max(ty * tz, 1))
    mode = "nearest" if order == "nearest" else "bilinear"  # "bilinear" is trilinear on 5-D input
    for start in range(0, tx, slab):
        stop = min(tx, start + slab)
        ix = torch.arange(start, stop, dtype=torch.float64, device=dev)[:, None, None].expand(-1, ty, tz)
        points = torch.stack([ix, jy.expand_as(ix), jz.expand_as(ix), torch.ones_like(ix)], dim=-1)
        coords = points @ affine.T  # (n, ty, tz, 4): normalised (x, y, z, 1) in the source
        # grid_sample wants (W, H, D) order, i.e. (z, y, x), for a (D, H, W) = (X, Y, Z) volume.
        grid = coords[..., [2, 1, 0]].float()[None]
        sampled = torch.nn.functional.grid_sample(
            source, grid, mode=mode, padding_mode="zeros", align_corners=True
        )
        out[:, start:stop] = sampled[0].cpu().numpy()
    result: npt.NDArray[np.generic]
    if np.issubdtype(array.dtype, np.integer) or array.dtype == np.bool_:
        result = np.rint(out).astype(array.dtype) if array.dtype != np.bool_ else out >= 0.5
    else:
        result = out.astype(array.dtype, copy=False)
    return result if channels_first else result[0]


def to_grid(
    array: npt.NDArray[np.generic],
    source_affine: npt.ArrayLike,
    target_affine: npt.ArrayLike,
    target_shape: Sequence[int],
    order: Order,
    device: str | torch.device | None = None,
) -> npt.NDArray[np.generic]:
    """`array` on the target grid: reordered exactly where possible, else resampled."""
    source_shape = array.shape[-3:]
    mapping = axis_map(source_affine, source_shape, target_affine, target_shape)
    if mapping is not None:
        return apply_axis_map(array, mapping)
    return resample(array, source_affine, target_affine, target_shape, order, device)
