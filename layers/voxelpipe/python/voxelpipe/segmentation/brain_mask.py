"""Brain mask for a T1-weighted volume: kept as given when already skull-stripped, else extracted.

Extraction is classical and atlas-free, on a ~2 mm working grid (block means), then brought back
to the input grid:

1. head = Otsu foreground of the volume, its largest component, holes filled;
2. tissue = voxels of the head above the darkest of three intensity clusters within the head
   (dark: skull, CSF, air cavities; middle: GM, muscle; bright: WM, fat);
3. the tissue mask is eroded (4 mm) to cut the thin bridges between brain and scalp through the
   dark skull and CSF, and its largest component kept: the brain is by far the largest compact
   bright structure of a head;
4. that core is grown back inside the tissue mask (geodesic dilation), closed (fills sulci and
   takes in the CSF between gyri) and its holes (ventricles) filled.

Skull-stripped detection: most of the volume sits at exactly the minimum value (a stripping tool
zeroes everything outside the brain, whereas air in an unstripped scan is noise), and what is left
is one compact component of brain size. Override with `skull_stripped=True/False`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch

from voxelpipe.segmentation import morphology as morph
from voxelpipe.segmentation.device import resolve_device
from voxelpipe.segmentation.em import kmeans_means

FloatArray = npt.NDArray[np.float32]
BoolArray = npt.NDArray[np.bool_]

WORKING_SPACING_MM = 2.0  # extraction grid: 8x fewer voxels at 1 mm, still resolves the skull
# Skull-stripped detection thresholds.
STRIPPED_MIN_BACKGROUND_FRACTION = 0.2  # exact-minimum voxels; unstripped air is noisy, not constant
STRIPPED_MIN_ML = 250.0  # a (small, e.g. paediatric) brain
STRIPPED_MAX_ML = 2500.0  # a whole head (with scalp) is well above this
STRIPPED_MIN_COMPONENT_FRACTION = 0.9  # the foreground is one piece
# Extraction.
EROSION_MM = 4.0  # thicker than most brain-scalp bridges through the skull, thinner than the brain
REGROW_MM = 6.0  # back over the erosion, plus gyri the erosion thinned
CLOSING_MM = 6.0  # sulcal and extracerebral CSF between gyri
HISTOGRAM_BINS = 512


@dataclass(frozen=True)
class SkullStrippedCheck:
    skull_stripped: bool
    background_fraction: float  # share of voxels at exactly the volume's minimum
    foreground_ml: float  # volume of the voxels above it
    component_fraction: float  # share of those in the largest connected piece
    reason: str


@dataclass(frozen=True)
class BrainMask:
    mask: BoolArray
    skull_stripped: bool  # True: the input's own foreground was used, no extraction
    method: str
    check: SkullStrippedCheck | None  # None when the caller decided `skull_stripped`
    volume_ml: float


def otsu_split(values: torch.Tensor, bins: int = HISTOGRAM_BINS) -> float:
    """Otsu's threshold of `values` (1-D): the split maximising the between-class variance."""
    lo, hi = float(values.min()), float(values.max())
    if hi <= lo:
        return hi
    hist = torch.histc(values.float(), bins=bins, min=lo, max=hi).double()
    centres = lo + (torch.arange(bins, dtype=torch.float64, device=hist.device) + 0.5) * (hi - lo) / bins
    w0 = torch.cumsum(hist, 0)[:-1]
    w1 = hist.sum() - w0
    m0 = torch.cumsum(hist * centres, 0)[:-1]
    m1 = (hist * centres).sum() - m0
    valid = (w0 > 0) & (w1 > 0)
    between = torch.where(
        valid, w0 * w1 * (m0 / w0.clamp(min=1) - m1 / w1.clamp(min=1)) ** 2, torch.zeros_like(w0)
    )
    k = int(torch.argmax(between))
    return lo + (k + 1) * (hi - lo) / bins


def _factors(spacing: Sequence[float]) -> tuple[int, int, int]:
    f = [max(1, round(WORKING_SPACING_MM / float(s))) for s in spacing]
    return (f[0], f[1], f[2])


@dataclass(frozen=True)
class _Foreground:
    """An input's voxels above its minimum, and their largest piece on the working grid: what the
    skull-stripped check measures and, when it passes, the brain mask (labelled once for both)."""

    fine: torch.Tensor  # bool, the input's grid
    coarse: torch.Tensor  # bool, the working grid: a block is foreground if any voxel is
    main: torch.Tensor  # bool, the working grid: the largest 6-connected piece of `coarse`
    factors: tuple[int, int, int]


def _foreground(data: FloatArray, spacing: Sequence[float], dev: torch.device) -> _Foreground:
    volume = torch.as_tensor(np.ascontiguousarray(data), device=dev)
    fine = volume > volume.min()
    del volume
    factors = _factors(spacing)
    # Components on the working grid: 8x cheaper at 1 mm, same topology for anything thicker
    # than a block.
    coarse = morph.downsample(fine.float(), factors) > 0
    return _Foreground(fine=fine, coarse=coarse, main=morph.largest_component(coarse), factors=factors)


def _stripped_check(foreground: _Foreground, spacing: Sequence[float]) -> SkullStrippedCheck:
    n = foreground.fine.numel()
    fg_count = int(foreground.fine.sum())
    voxel_ml = float(np.prod([float(s) for s in spacing])) / 1000.0
    background_fraction = 1.0 - fg_count / n
    foreground_ml = fg_count * voxel_ml
    coarse_count = int(foreground.coarse.sum())
    fraction = int(foreground.main.sum()) / coarse_count if coarse_count else 1.0
    if background_fraction < STRIPPED_MIN_BACKGROUND_FRACTION:
        reason = f"only {background_fraction:.0%} of voxels at the minimum value: background is not zeroed"
        stripped = False
    elif not STRIPPED_MIN_ML <= foreground_ml <= STRIPPED_MAX_ML:
        reason = f"foreground of {foreground_ml:.0f} mL is not brain-sized"
        stripped = False
    elif fraction < STRIPPED_MIN_COMPONENT_FRACTION:
        reason = f"foreground is fragmented ({fraction:.0%} in its largest piece)"
        stripped = False
    else:
        reason = (
            f"{background_fraction:.0%} of voxels at the minimum value around one compact "
            f"{foreground_ml:.0f} mL foreground"
        )
        stripped = True
    return SkullStrippedCheck(
        skull_stripped=stripped,
        background_fraction=round(background_fraction, 5),
        foreground_ml=round(foreground_ml, 2),
        component_fraction=round(fraction, 5),
        reason=reason,
    )


def _stripped_mask(foreground: _Foreground) -> BoolArray:
    """Foreground voxels whose block is in the largest piece, plus holes where a whole block is
    enclosed background."""
    fine, main, factors = foreground.fine, foreground.main, foreground.factors
    filled = morph.fill_holes(main)
    keep = morph.upsample_mask(main, factors, fine.shape)
    holes = morph.upsample_mask(filled & ~main, factors, fine.shape)
    mask = (fine & keep) | holes
    result: BoolArray = mask.cpu().numpy()
    return result


def detect_skull_stripped(
    data: FloatArray, spacing: Sequence[float], device: str | torch.device | None = None
) -> SkullStrippedCheck:
    """Whether `data` looks already skull-stripped (see the module docstring for the rule)."""
    return _stripped_check(_foreground(data, spacing, resolve_device(device)), spacing)


def _upsample_mask(coarse: torch.Tensor, factors: Sequence[int], shape: Sequence[int]) -> torch.Tensor:
    """A working-grid mask on the input grid: trilinear on 0/1 at 0.5, so edges are not blocky."""
    if all(f == 1 for f in factors):
        return coarse
    full = [int(n) * int(f) for n, f in zip(coarse.shape, factors, strict=True)]
    fine = torch.nn.functional.interpolate(
        coarse.float()[None, None], size=full, mode="trilinear", align_corners=False
    )[0, 0]
    return (fine[: shape[0], : shape[1], : shape[2]] >= 0.5).contiguous()


def extract_brain(
    data: FloatArray, spacing: Sequence[float], device: str | torch.device | None = None
) -> BoolArray:
    """Brain mask of a T1-weighted volume with skull and scalp (see the module docstring)."""
    dev = resolve_device(device)
    volume = torch.as_tensor(np.ascontiguousarray(data), dtype=torch.float32, device=dev)
    factors = _factors(spacing)
    work_spacing = [float(s) * f for s, f in zip(spacing, factors, strict=True)]
    coarse = morph.downsample(volume, factors)
    coarse = morph.smooth(coarse, 1.0, work_spacing)  # despeckles noise before thresholding
    if float(coarse.max()) <= float(coarse.min()):  # a constant volume holds no head
        return np.zeros(data.shape, dtype=np.bool_)
    head = morph.fill_holes(morph.largest_component(coarse >= otsu_split(coarse.ravel())))
    if not bool(head.any()):
        return np.zeros(data.shape, dtype=np.bool_)
    # Three intensity clusters in the head: dark (bone, CSF, air cavities), middle (GM, muscle),
    # bright (WM, fat). Brain tissue is above the dark one; an Otsu split would cut GM from WM.
    dark, middle, _ = kmeans_means(coarse[head], 3)
    tissue = head & (coarse >= 0.5 * (dark + middle))
    core = morph.largest_component(morph.erode(tissue, morph.steps_for_radius(EROSION_MM, work_spacing)))
    if not bool(core.any()):  # nothing survives erosion: a tiny or thin object; keep the tissue
        core = morph.largest_component(tissue)
    grown = core
    for _ in range(max(morph.steps_for_radius(REGROW_MM, work_spacing))):
        grown = morph.dilate(grown, (1, 1, 1)) & tissue  # geodesic: never leaves the tissue mask
    brain = morph.fill_holes(morph.close(grown, morph.steps_for_radius(CLOSING_MM, work_spacing)))
    mask = _upsample_mask(brain, factors, data.shape)
    result: BoolArray = mask.cpu().numpy()
    return result


def stripped_foreground(
    data: FloatArray, spacing: Sequence[float], device: str | torch.device | None = None
) -> BoolArray:
    """An already-stripped volume's brain: its voxels above the minimum, in the largest piece,
    with enclosed holes filled.

    Components and holes are found on the ~2 mm working grid (a block is foreground if any of its
    voxels is), which is 8x cheaper at 1 mm: foreground voxels are kept where their block is in
    the largest piece, and holes are filled where a whole block is enclosed background.
    """
    return _stripped_mask(_foreground(data, spacing, resolve_device(device)))


def brain_mask(
    data: FloatArray,
    spacing: Sequence[float],
    skull_stripped: bool | None = None,
    device: str | torch.device | None = None,
) -> BrainMask:
    """The brain mask of `data` (a T1 volume); `skull_stripped=None` detects whether to extract."""
    dev = resolve_device(device)
    check = None
    foreground = None
    if skull_stripped is None:
        foreground = _foreground(data, spacing, dev)
        check = _stripped_check(foreground, spacing)
        skull_stripped = check.skull_stripped
    if skull_stripped:
        # The check's foreground and its largest piece serve again: labelled once per input.
        mask = _stripped_mask(foreground or _foreground(data, spacing, dev))
        method = "input already skull-stripped: its non-background voxels, largest piece, holes filled"
    else:
        del foreground  # the extraction does not need it: free the input-sized mask
        mask = extract_brain(data, spacing, dev)
        method = (
            "extracted: Otsu head mask, tissue above the darkest of three intensity clusters, "
            f"{EROSION_MM:g} mm erosion, largest component, geodesic regrowth, "
            f"{CLOSING_MM:g} mm closing, holes filled"
        )
    voxel_ml = math.prod(float(s) for s in spacing) / 1000.0
    return BrainMask(
        mask=mask,
        skull_stripped=bool(skull_stripped),
        method=method,
        check=check,
        volume_ml=round(int(mask.sum()) * voxel_ml, 2),
    )
