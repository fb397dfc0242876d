"""Binary morphology, connected components and smoothing on 3-D torch tensors (CPU or GPU).

Morphology and smoothing are built from shifted slices (no convolution kernels), so results are
exact and identical on every device: boolean ops are exact, and the float smoothing is a fixed
sequence of adds. Outside the volume counts as background.

Connected components have two backends with identical results: `scipy` (`scipy.ndimage.label`,
one C pass: the default for CPU tensors) and `torch` (iterative minimum-label propagation, which
runs where the tensor lies: the default on CUDA, where scipy cannot reach). Labelling by
propagation costs tens of whole-volume sweeps, so on the CPU it was 30-50% of `segment()`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import torch

Tensor = torch.Tensor
# Which implementation labels components; None: scipy for CPU tensors, torch for the others.
LabelBackend = Literal["scipy", "torch"]

# Component labelling stops after this many sweeps even if not converged; brain-like shapes need
# ~10-40 (pointer jumping halves the chains), so reaching it means a pathological mask.
_MAX_LABEL_SWEEPS = 2000


def _shift_or(src: Tensor, out: Tensor, axis: int) -> None:
    """out |= src shifted by +1 and -1 voxels along `axis` (in place on `out`)."""
    n = src.shape[axis]
    if n < 2:
        return
    out.narrow(axis, 1, n - 1).logical_or_(src.narrow(axis, 0, n - 1))
    out.narrow(axis, 0, n - 1).logical_or_(src.narrow(axis, 1, n - 1))


def steps_for_radius(radius_mm: float, spacing: Sequence[float]) -> tuple[int, int, int]:
    """Per axis, how many one-voxel steps span `radius_mm` (at least 0)."""
    return (
        max(0, round(radius_mm / float(spacing[0]))),
        max(0, round(radius_mm / float(spacing[1]))),
        max(0, round(radius_mm / float(spacing[2]))),
    )


def dilate(mask: Tensor, steps: Sequence[int]) -> Tensor:
    """Dilation by a ball-like element `steps[d]` voxels along axis d.

    One-voxel steps, two 6-neighbour (cross) steps to each 26-neighbour (box) step: the closest of
    the simple mixes to a Euclidean ball (Dice 0.84-0.93 with the ball for radii 2-8, where box
    steps alone give cubes and cross steps alone octahedra, Dice ~0.6).
    """
    out = mask.clone()
    for k in range(1, max(steps, default=0) + 1):
        axes = [a for a in range(3) if steps[a] >= k]
        if k % 3 == 0:  # box: separable, each pass reads the previous pass's result
            for axis in axes:
                _shift_or(out.clone(), out, axis)
        else:  # cross: every axis reads the same source
            src = out.clone()
            for axis in axes:
                _shift_or(src, out, axis)
    return out


def erode(mask: Tensor, steps: Sequence[int]) -> Tensor:
    """Erosion as the complement of the background's dilation; voxels next to the edge erode."""
    padded = torch.nn.functional.pad(mask.to(torch.uint8)[None, None], (1, 1, 1, 1, 1, 1))[0, 0].bool()
    eroded = ~dilate(~padded, steps)
    return eroded[1:-1, 1:-1, 1:-1].contiguous()


def close(mask: Tensor, steps: Sequence[int]) -> Tensor:
    """Closing (dilate then erode), computed on a padded copy so objects near the edge are not cut."""
    pad = [s for s in steps for _ in (0, 1)][::-1]  # F.pad wants the last axis first
    padded = torch.nn.functional.pad(mask.to(torch.uint8)[None, None], pad)[0, 0].bool()
    closed = erode(dilate(padded, steps), steps)
    return closed[
        steps[0] : closed.shape[0] - steps[0],
        steps[1] : closed.shape[1] - steps[1],
        steps[2] : closed.shape[2] - steps[2],
    ].contiguous()


def _backend(mask: Tensor, backend: LabelBackend | None) -> LabelBackend:
    if backend is not None:
        return backend
    return "scipy" if mask.device.type == "cpu" else "torch"


def _scipy_labels(mask: Tensor) -> tuple[npt.NDArray[np.int32], int]:
    """scipy's 6-connected labels of a CPU mask (1..count, 0 background) and their count."""
    from scipy import ndimage  # loaded on first use: the light Lambdas never label anything

    labels, count = ndimage.label(mask.numpy())  # the default structure is the 6-neighbour cross
    return labels, int(count)


def _first_of_largest(labels: npt.NDArray[np.int32], count: int) -> int:
    """The label (1..count) of the largest component; among equal sizes, the one whose first voxel
    (flat index) comes first: the torch backend's choice, whatever order scipy numbers them in."""
    sizes = np.bincount(labels.ravel(), minlength=count + 1)
    sizes[0] = 0
    tied = np.flatnonzero(sizes == sizes.max())
    if len(tied) == 1:
        return int(tied[0])
    flat = labels.ravel()
    return int(min(tied, key=lambda label: int(np.argmax(flat == label))))


def label_components(mask: Tensor, backend: LabelBackend | None = None) -> Tensor:
    """6-connected component labels (int64): 0 for background, else 1 + the smallest flat index of
    the component's voxels (so both backends give the same numbers)."""
    if _backend(mask, backend) == "torch":
        return _propagated_labels(mask)
    labels, count = _scipy_labels(mask)
    flat = labels.ravel()
    # Each label's first voxel in flat order is its smallest index.
    values, first = np.unique(flat, return_index=True)
    numbering = np.zeros(count + 1, dtype=np.int64)
    numbering[values] = first + 1
    numbering[0] = 0
    return torch.from_numpy(numbering[labels])


def _propagated_labels(mask: Tensor) -> Tensor:
    """The torch backend of `label_components`, on the mask's own device.

    Minimum-label propagation over the six neighbours with pointer jumping (each label is a voxel
    of the same component, so `label[label[i]]` is a valid, smaller label): converges in a few tens
    of sweeps for compact shapes, versus the diameter for plain propagation.
    """
    mask = mask.contiguous()
    n = mask.numel()
    if n == 0:
        return torch.zeros(mask.shape, dtype=torch.int64, device=mask.device)
    sentinel = n + 1
    index = torch.arange(1, n + 1, dtype=torch.int64, device=mask.device).view(mask.shape)
    labels = torch.where(mask, index, sentinel)
    del index
    for _ in range(_MAX_LABEL_SWEEPS):
        new = labels.clone()
        for axis in range(3):
            size = labels.shape[axis]
            if size < 2:
                continue
            # Background keeps the sentinel after every pass, so no label crosses it.
            lo, hi = new.narrow(axis, 0, size - 1), new.narrow(axis, 1, size - 1)
            lo_mask, hi_mask = mask.narrow(axis, 0, size - 1), mask.narrow(axis, 1, size - 1)
            lo.copy_(torch.where(lo_mask, torch.minimum(lo, hi), lo))
            hi.copy_(torch.where(hi_mask, torch.minimum(hi, lo), hi))
        flat = new.view(-1)
        for _ in range(4):
            flat = torch.where(flat < sentinel, flat[(flat - 1).clamp(max=n - 1)], flat)
        new = flat.view(mask.shape)
        if torch.equal(new, labels):
            break
        labels = new
    return torch.where(mask, labels, 0)


def largest_component(mask: Tensor, backend: LabelBackend | None = None) -> Tensor:
    """The largest 6-connected component of `mask` (all False if `mask` is empty); of equal-sized
    largest ones, the one whose first voxel comes first in flat order."""
    if not bool(mask.any()):
        return mask.clone()
    if _backend(mask, backend) == "scipy":
        numbered, count = _scipy_labels(mask)
        return torch.from_numpy(numbered == _first_of_largest(numbered, count))
    labels = _propagated_labels(mask)
    values, counts = torch.unique(labels[mask], return_counts=True)  # sorted: argmax takes the first
    largest: Tensor = labels == values[torch.argmax(counts)]
    return largest


def component_fraction(mask: Tensor, backend: LabelBackend | None = None) -> float:
    """Share of `mask`'s voxels in its largest 6-connected component (1.0 for an empty mask)."""
    total = int(mask.sum())
    if total == 0:
        return 1.0
    return int(largest_component(mask, backend).sum()) / total


def fill_holes(mask: Tensor, backend: LabelBackend | None = None) -> Tensor:
    """`mask` plus every background region (6-connected) that does not reach the volume's edge."""
    background = ~mask
    if not bool(background.any()):
        return mask.clone()
    if _backend(mask, backend) == "scipy":
        labels, _ = _scipy_labels(background)
        outside = np.unique(np.concatenate([face.ravel() for face in _faces(labels)]))
        holes = ~np.isin(labels, outside) & background.numpy()
        return mask | torch.from_numpy(holes)
    labels_t = _propagated_labels(background)
    faces = torch.cat([face.ravel() for face in _faces(labels_t)])
    outside_t = torch.unique(faces[faces > 0])
    return mask | (background & ~torch.isin(labels_t, outside_t))


def _faces(volume: Any) -> list[Any]:
    """The six faces of a 3-D array or tensor."""
    return [volume[0], volume[-1], volume[:, 0], volume[:, -1], volume[:, :, 0], volume[:, :, -1]]


def smooth(data: Tensor, sigma_mm: float, spacing: Sequence[float]) -> Tensor:
    """Separable Gaussian smoothing (kernel truncated at 3 sigma, edges renormalised)."""
    out = data
    for axis in range(3):
        sigma = sigma_mm / float(spacing[axis])
        radius = min(math.ceil(3 * sigma), data.shape[axis] - 1)
        if sigma < 0.2 or radius < 1:
            continue
        weights = [math.exp(-0.5 * (k / sigma) ** 2) for k in range(radius + 1)]
        acc = out * weights[0]
        n = out.shape[axis]
        norm = torch.full((n,), weights[0], dtype=out.dtype, device=out.device)
        for k in range(1, radius + 1):
            w = weights[k]
            acc.narrow(axis, k, n - k).add_(out.narrow(axis, 0, n - k), alpha=w)
            acc.narrow(axis, 0, n - k).add_(out.narrow(axis, k, n - k), alpha=w)
            norm[k:] += w
            norm[: n - k] += w
        view = [1, 1, 1]
        view[axis] = n
        out = acc / norm.view(view)
    return out


def downsample(data: Tensor, factors: Sequence[int]) -> Tensor:
    """Block means over `factors` voxels per axis (edge blocks partial; float input)."""
    if all(f == 1 for f in factors):
        return data
    kernel = tuple(int(f) for f in factors)
    pooled = torch.nn.functional.avg_pool3d(
        data[None, None], kernel_size=kernel, stride=kernel, ceil_mode=True, count_include_pad=False
    )
    return pooled[0, 0]


def upsample_mask(mask: Tensor, factors: Sequence[int], shape: Sequence[int]) -> Tensor:
    """A block-downsampled mask back on the fine grid: each block's value fills its voxels."""
    out = mask
    for axis, f in enumerate(factors):
        if f > 1:
            out = out.repeat_interleave(int(f), dim=axis)
    return out[: shape[0], : shape[1], : shape[2]].contiguous()
