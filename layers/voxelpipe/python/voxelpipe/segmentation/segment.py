"""The whole tissue segmentation of one T1 volume: brain mask, bias correction, EM mixture.

Pure: arrays and voxel sizes in, arrays out, on one voxel grid (the analysis passes the canonical
RAS grid and moves the results to the input's own grid with `voxelpipe.segmentation.resample`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
import torch

from voxelpipe.segmentation.bias import BiasField, BiasMode, BiasParameters, correct_bias
from voxelpipe.segmentation.brain_mask import BrainMask, brain_mask
from voxelpipe.segmentation.device import resolve_device
from voxelpipe.segmentation.em import EMParameters, TissueSegmentation, segment_tissues

FloatArray = npt.NDArray[np.float32]


@dataclass(frozen=True)
class SegmentationParameters:
    skull_stripped: bool | None = None  # None: detect; True: keep the input's foreground; False: extract
    bias: BiasMode = "auto"
    bias_parameters: BiasParameters = field(default_factory=BiasParameters)
    em: EMParameters = field(default_factory=EMParameters)


@dataclass(frozen=True)
class Segmentation:
    labels: npt.NDArray[np.uint8]  # 0 background, 1 CSF, 2 GM, 3 WM
    probabilities: FloatArray  # (3, X, Y, Z): CSF, GM, WM; 0 outside the brain mask
    brain: BrainMask
    bias: BiasField
    tissues: TissueSegmentation
    timings_s: dict[str, float]
    device: str


def segment(
    data: FloatArray,
    spacing: Sequence[float],
    parameters: SegmentationParameters | None = None,
    device: str | torch.device | None = None,
) -> Segmentation:
    """Brain mask, bias correction and GM/WM/CSF segmentation of a T1-weighted volume.

    `data` is 3-D (non-finite values are treated as 0); `spacing` its voxel edge lengths in mm.
    Raises ValueError when no brain is found.
    """
    params = parameters or SegmentationParameters()
    dev = resolve_device(device)
    if data.ndim != 3:
        raise ValueError(f"expected a 3-D volume, got shape {data.shape}")
    volume = np.asarray(data, dtype=np.float32)
    if not np.isfinite(volume).all():
        volume = np.nan_to_num(volume, nan=0.0, posinf=0.0, neginf=0.0)
    timings: dict[str, float] = {}
    start = time.perf_counter()
    brain = brain_mask(volume, spacing, params.skull_stripped, dev)
    timings["brain_mask"] = round(time.perf_counter() - start, 3)
    if not brain.mask.any():
        raise ValueError("no brain found: the brain mask is empty")
    start = time.perf_counter()
    corrected, bias = correct_bias(volume, brain.mask, spacing, params.bias, params.bias_parameters)
    timings["bias"] = round(time.perf_counter() - start, 3)
    start = time.perf_counter()
    tissues = segment_tissues(corrected, brain.mask, spacing, params.em, dev)
    timings["em"] = round(time.perf_counter() - start, 3)
    return Segmentation(
        labels=tissues.labels,
        probabilities=tissues.probabilities,
        brain=brain,
        bias=bias,
        tissues=tissues,
        timings_s=timings,
        device=str(dev),
    )
