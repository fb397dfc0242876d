"""Inference over many volumes at once: sliding windows (segmentation), or each whole volume as
one input (`VolumeRunner`: regression and classification models).

Windows are placed and blended exactly as MONAI's `sliding_window_inference` places and blends
them (same starts, same gaussian importance map, same padding of volumes smaller than a window),
so results agree with it; what differs is the work around the network:

* windows of *many* volumes (any shapes) share each forward pass, so a batch is always full;
* the importance map is built once per (patch, blend, device), and the blended weight sum of a
  volume's windows once per (shape, patch, overlap, blend, device): there is no per-window
  count map to accumulate;
* output buffers are kept and reused between calls (zeroed, not reallocated);
* with `reduce="argmax"` the division by the weight sum is skipped (it is positive per voxel,
  so it cannot change the argmax) and only the label map leaves the device;
* on CUDA: inputs are copied from pinned memory without blocking, bf16 autocast when allowed,
  cuDNN picks its fastest kernels for the fixed window shape.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

import torch
import torch.nn.functional as F

Predictor = Callable[[torch.Tensor], torch.Tensor]
Blend = Literal["gaussian", "constant"]
Shape3 = tuple[int, int, int]

SIGMA_SCALE = 0.125  # MONAI's default: sigma = 0.125 * window edge
_POOL_BUFFERS = 16  # output buffers kept between calls (more while one call needs more)
_HEADROOM = 1.1


def scan_interval(image_size: Sequence[int], patch: Sequence[int], overlap: float) -> Shape3:
    """Window step per axis (MONAI's `_get_scan_interval`)."""
    steps = []
    for size, edge in zip(image_size, patch, strict=True):
        steps.append(edge if edge == size else max(int(edge * (1 - overlap)), 1))
    return steps[0], steps[1], steps[2]


def window_starts(image_size: Sequence[int], patch: Sequence[int], overlap: float) -> list[Shape3]:
    """Every window's start, in MONAI's order (`dense_patch_slices`: last axis fastest).

    `image_size` must be at least `patch` on every axis (pad first: `padding`).
    """
    per_axis: list[list[int]] = []
    for size, edge, step in zip(image_size, patch, scan_interval(image_size, patch, overlap), strict=True):
        count = next((d for d in range(math.ceil(size / step)) if d * step + edge >= size), 0) + 1
        per_axis.append([d * step - max(d * step + edge - size, 0) for d in range(count)])
    return [(x, y, z) for x in per_axis[0] for y in per_axis[1] for z in per_axis[2]]


def padding(shape: Sequence[int], patch: Sequence[int]) -> tuple[Shape3, Shape3]:
    """(before, after) zero padding per axis that brings a volume up to one window (MONAI's)."""
    diff = [max(edge - size, 0) for size, edge in zip(shape, patch, strict=True)]
    before = tuple(d // 2 for d in diff)
    after = tuple(d - d // 2 for d in diff)
    return (before[0], before[1], before[2]), (after[0], after[1], after[2])


@lru_cache(maxsize=16)
def importance_map(patch: Shape3, blend: Blend, device: torch.device) -> torch.Tensor:
    """Each window voxel's weight (MONAI's `compute_importance_map`, float32)."""
    if blend == "constant":
        return torch.ones(patch, dtype=torch.float32, device=device)
    weights: torch.Tensor | None = None
    for axis, edge in enumerate(patch):
        sigma = edge * SIGMA_SCALE
        x = torch.arange(-(edge - 1) / 2.0, (edge - 1) / 2.0 + 1, dtype=torch.float32, device=device)
        x = torch.exp(x**2 / (-2 * sigma**2))
        weights = x if weights is None else weights.unsqueeze(-1) * x[(None,) * axis]
    assert weights is not None
    # Clamped away from zero, as MONAI does, so every voxel has some weight.
    floor = max(float(weights.min()), 1e-3)
    return weights.clamp(min=floor)


@lru_cache(maxsize=16)
def weight_sum(
    shape: Shape3, patch: Shape3, overlap: float, blend: Blend, device: torch.device
) -> torch.Tensor:
    """The sum of the importance maps of every window of a (padded) volume: its blend divisor."""
    weights = importance_map(patch, blend, device)
    total = torch.zeros(shape, dtype=torch.float32, device=device)
    for x, y, z in window_starts(shape, patch, overlap):
        total[x : x + patch[0], y : y + patch[1], z : z + patch[2]] += weights
    return total


@dataclass(frozen=True)
class WindowSettings:
    patch: Shape3
    overlap: float = 0.25
    blend: Blend = "gaussian"
    sw_batch_size: int = 4
    bf16: bool = False  # autocast to bfloat16 (applied on CUDA only)


class SlidingWindowRunner:
    """Runs one network over windows of many volumes; keep one per (model, device) and reuse it."""

    def __init__(
        self, predictor: Predictor, out_channels: int, settings: WindowSettings, device: torch.device
    ) -> None:
        self.predictor = predictor
        self.out_channels = out_channels
        self.settings = settings
        self.device = device
        self._flat: list[torch.Tensor] = []
        self._batch: torch.Tensor | None = None
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # the window shape never changes

    @property
    def buffer_bytes(self) -> int:
        """Device memory held in output buffers between calls."""
        return sum(t.numel() * t.element_size() for t in self._flat)

    def _buffers(self, shapes: Sequence[Shape3]) -> list[torch.Tensor]:
        """One zeroed (channels, *shape) output buffer per volume, carved from flat buffers kept
        between calls: studies rarely share a shape, so any kept buffer large enough serves."""
        sizes = [self.out_channels * shape[0] * shape[1] * shape[2] for shape in shapes]
        free = sorted(self._flat, key=lambda t: t.numel())
        taken: list[torch.Tensor] = []
        out = []
        # Largest volumes first, each given the smallest free buffer that holds it.
        for index in sorted(range(len(shapes)), key=lambda i: -sizes[i]):
            fit = next((t for t in free if t.numel() >= sizes[index]), None)
            if fit is None:
                # A little headroom, so a slightly larger volume next time reuses it.
                fit = torch.empty(int(sizes[index] * _HEADROOM), dtype=torch.float32, device=self.device)
            else:
                free = [t for t in free if t is not fit]  # (tensors' == is elementwise)
            taken.append(fit)
            out.append((index, fit[: sizes[index]].view(self.out_channels, *shapes[index]).zero_()))
        # Keep what this call used, and the largest of the rest up to the limit.
        spare = sorted(free, key=lambda t: -t.numel())[: max(0, _POOL_BUFFERS - len(taken))]
        self._flat = taken + spare
        return [buffer for _, buffer in sorted(out, key=lambda item: item[0])]

    def _to_device(self, volume: torch.Tensor) -> torch.Tensor:
        if volume.device == self.device:
            return volume
        if self.device.type == "cuda":
            # From pinned memory the copy is asynchronous: the CPU goes on batching.
            return volume.pin_memory().to(self.device, non_blocking=True)
        return volume.to(self.device)

    def _forward(self, batch: torch.Tensor) -> torch.Tensor:
        use_bf16 = self.settings.bf16 and self.device.type == "cuda"
        with torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=use_bf16):
            prediction = self.predictor(batch)
        return prediction.float()

    @torch.inference_mode()
    def run(
        self, volumes: Sequence[torch.Tensor], reduce: Literal["mean", "argmax"] = "mean"
    ) -> list[torch.Tensor]:
        """Blend the network's output over each (channels, X, Y, Z) volume.

        "mean": the blended outputs, (out_channels, X, Y, Z) float32, as MONAI computes them;
        "argmax": the channel of the largest blended output per voxel, (X, Y, Z) int64.
        Results are on the runner's device and are new tensors (the buffers stay here).
        """
        s = self.settings
        patch = s.patch
        padded: list[torch.Tensor] = []
        pads: list[tuple[Shape3, Shape3]] = []
        for volume in volumes:
            if volume.ndim != 4:
                raise ValueError(f"expected (channels, X, Y, Z) volumes, got shape {tuple(volume.shape)}")
            before, after = padding(volume.shape[1:], patch)
            on_device = self._to_device(volume.float())
            if any(before) or any(after):
                # F.pad lists the last axis first.
                pad = (before[2], after[2], before[1], after[1], before[0], after[0])
                on_device = F.pad(on_device, pad, mode="constant", value=0.0)
            padded.append(on_device)
            pads.append((before, after))
        shapes: list[Shape3] = [(int(v.shape[1]), int(v.shape[2]), int(v.shape[3])) for v in padded]
        outputs = self._buffers(shapes)
        weights = importance_map(patch, s.blend, self.device)
        windows = [
            (index, start)
            for index, shape in enumerate(shapes)
            for start in window_starts(shape, patch, s.overlap)
        ]
        channels = int(padded[0].shape[0]) if padded else 0
        batch_shape = (s.sw_batch_size, channels, *patch)
        if self._batch is None or tuple(self._batch.shape) != batch_shape:
            self._batch = torch.empty(batch_shape, dtype=torch.float32, device=self.device)
        for first in range(0, len(windows), s.sw_batch_size):
            chunk = windows[first : first + s.sw_batch_size]
            batch = self._batch[: len(chunk)]
            for slot, (index, (x, y, z)) in enumerate(chunk):
                batch[slot].copy_(padded[index][:, x : x + patch[0], y : y + patch[1], z : z + patch[2]])
            prediction = self._forward(batch)
            if prediction.shape[1] != self.out_channels or tuple(prediction.shape[2:]) != patch:
                raise ValueError(
                    f"the network gave {tuple(prediction.shape[1:])} per window; "
                    f"expected ({self.out_channels}, {', '.join(map(str, patch))})"
                )
            for slot, (index, (x, y, z)) in enumerate(chunk):
                region = outputs[index][:, x : x + patch[0], y : y + patch[1], z : z + patch[2]]
                region.addcmul_(prediction[slot], weights)
        results = []
        for output, shape, (before, _after), volume in zip(outputs, shapes, pads, volumes, strict=True):
            crop = tuple(slice(b, b + int(n)) for b, n in zip(before, volume.shape[1:], strict=True))
            if reduce == "argmax":
                results.append(output[(slice(None), *crop)].argmax(dim=0))
            else:
                blended = output / weight_sum(shape, patch, s.overlap, s.blend, self.device)
                results.append(blended[(slice(None), *crop)].contiguous())
        return results


class VolumeRunner:
    """Runs a whole-volume network (regression, classification): each volume is one input, and
    volumes of one shape share a forward pass. Windows are never used: a scalar of a whole brain
    (its age, its class) is not an average of scalars of its parts."""

    def __init__(self, predictor: Predictor, device: torch.device, bf16: bool = False) -> None:
        self.predictor = predictor
        self.device = device
        self.bf16 = bf16

    def _forward(self, batch: torch.Tensor) -> torch.Tensor:
        use_bf16 = self.bf16 and self.device.type == "cuda"
        with torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=use_bf16):
            prediction = self.predictor(batch)
        return prediction.float()

    @torch.inference_mode()
    def run(self, volumes: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """The network's output for each (channels, X, Y, Z) volume, flattened: a 1-D float32 tensor
        on the CPU (its length is checked against the spec by the caller, who knows the names)."""
        results: list[torch.Tensor | None] = [None] * len(volumes)
        by_shape: dict[tuple[int, ...], list[int]] = {}
        for index, volume in enumerate(volumes):
            if volume.ndim != 4:
                raise ValueError(f"expected (channels, X, Y, Z) volumes, got shape {tuple(volume.shape)}")
            by_shape.setdefault(tuple(volume.shape), []).append(index)
        for indices in by_shape.values():
            batch = torch.stack([volumes[i].float() for i in indices]).to(self.device)
            prediction = self._forward(batch)
            if prediction.ndim == 0 or prediction.shape[0] != len(indices):
                raise ValueError(
                    f"the network gave an output of shape {tuple(prediction.shape)} for a batch of "
                    f"{len(indices)} volume(s); expected (batch, values)"
                )
            flat = prediction.reshape(len(indices), -1).cpu()
            for row, index in enumerate(indices):
                results[index] = flat[row].clone()
        return [result for result in results if result is not None]
