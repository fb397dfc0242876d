"""The `qc` analysis: header sanity, intensity statistics, a foreground mask, SNR/CNR and previews.

numpy, nibabel and Pillow only (the Lambda layer has nothing else). Everything runs on the float32
voxels of the canonical (RAS+) volume; the only whole-volume float temporaries are the smoothed copy
the mask is thresholded from and its scratch copy (freed once the mask exists), and the sorted copy
percentiles need; the rest are boolean (1 byte a voxel). About 0.5 s for a 197 x 233 x 189 volume
on one core.

Any finite float32 volume gives finite measures: what can overflow or underflow float32 (sums and
squares, percentile interpolation, histogram edges, the preview's intensity scaling) is computed in
float64, and the smoothing runs at an exact power-of-two scale that brings the values within +-1.

One function per phase, strung together by run_qc: canonical_voxels, header_measures,
intensity_measures, find_foreground (with foreground_measures and foreground_intensity),
noise_measures (noise and SNR; CNR from _two_class_contrast), preview_images.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from PIL import Image as PILImage

from voxelpipe.analyses.catalogue import QC as QC
from voxelpipe.analyses.catalogue import (
    QC_PARAMETERS,
    QC_PREVIEWS,
    AnalysisInput,
    AnalysisOutput,
    merged_parameters,
)
from voxelpipe.volume import (
    Image,
    canonical,
    first_volume,
    handedness,
    obliquity_deg,
    orientation,
    voxel_data,
    voxel_sizes,
)

FloatArray = npt.NDArray[np.float32]
BoolArray = npt.NDArray[np.bool_]

PREVIEWS = QC_PREVIEWS
DEFAULT_PARAMETERS = QC_PARAMETERS

# Magnitude MR images have Rayleigh-distributed noise where there is no signal: its standard
# deviation is sqrt(2 - pi/2) = 0.655 times the Gaussian sigma of the underlying complex channels
# (Henkelman, Med Phys 1985; Kaufman et al., Radiology 1989; NEMA MS 1).
RAYLEIGH_STD_FACTOR = 0.655

HISTOGRAM_BINS = 1024  # fine enough for Otsu on 16-bit or float data, cheap to scan
OBLIQUE_DEG = 0.01  # below this the axes are cardinal up to float noise in the affine
MIN_BACKGROUND_VOXELS = 1000  # fewer than this and the noise estimate is not worth reporting
DESPECKLE_MIN_NEIGHBOURS = 3  # of the 6 face neighbours; removes isolated noise voxels and spikes
ZERO_FILLED_FRACTION = 0.5  # more exact zeros than this in the background: it was masked, not noise


DisplayConvention = Literal["radiological", "neurological"]


def preview_parameters(merged: Mapping[str, Any]) -> tuple[int, DisplayConvention]:
    """The preview size and display convention an analysis's merged parameters ask for."""
    max_px = merged["preview_max_px"]
    if isinstance(max_px, bool) or not isinstance(max_px, int) or not 16 <= max_px <= 4096:
        raise ValueError("preview_max_px must be an integer in [16, 4096]")
    convention = merged["display_convention"]
    if convention not in ("radiological", "neurological"):
        raise ValueError("display_convention must be 'radiological' or 'neurological'")
    return max_px, convention


@dataclass(frozen=True)
class QCParameters:
    percentiles: tuple[float, ...]
    preview_max_px: int
    display_convention: DisplayConvention
    background_margin_mm: float

    @classmethod
    def from_mapping(cls, given: Mapping[str, Any]) -> QCParameters:
        """Defaults overlaid with `given`; unknown names and bad values raise ValueError."""
        merged = merged_parameters("qc", DEFAULT_PARAMETERS, given)
        pcts = merged["percentiles"]
        if (
            isinstance(pcts, str | bytes)
            or not isinstance(pcts, Sequence)
            or not pcts
            or not all(_is_number(p) and 0 <= p <= 100 for p in pcts)
        ):
            raise ValueError("percentiles must be a non-empty list of numbers in [0, 100]")
        max_px, convention = preview_parameters(merged)
        margin = merged["background_margin_mm"]
        if not _is_number(margin) or margin < 0:
            raise ValueError("background_margin_mm must be a number >= 0")
        return cls(
            percentiles=tuple(float(p) for p in pcts),
            preview_max_px=max_px,
            display_convention=convention,
            background_margin_mm=float(margin),
        )


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _num(value: float | np.floating[Any], digits: int = 6) -> float | None:
    """A plain float with `digits` significant digits (intensities have any scale); None if not finite."""
    x = float(value)
    return float(f"{x:.{digits}g}") if math.isfinite(x) else None


def _mm(value: float | np.floating[Any]) -> float:
    return round(float(value), 4)


def _pct_key(p: float) -> str:
    return f"p{p:g}"


# --- foreground -----------------------------------------------------------------------------------


def otsu_threshold(hist: npt.ArrayLike, edges: npt.ArrayLike) -> float:
    """Otsu's threshold from a histogram: the bin edge that maximises the between-class variance.

    Values >= the returned edge form the upper class. Returns the last edge when the histogram
    cannot be split (all counts in one bin).
    """
    counts = np.asarray(hist, dtype=np.float64)
    bin_edges = np.asarray(edges, dtype=np.float64)
    centres = 0.5 * (bin_edges[:-1] + bin_edges[1:])
    w0 = np.cumsum(counts)[:-1]  # lower class holds bins 0..k for a split at edge k+1
    total = counts.sum()
    w1 = total - w0
    m0 = np.cumsum(counts * centres)[:-1]
    m_total = float((counts * centres).sum())
    valid = (w0 > 0) & (w1 > 0)
    if not valid.any():
        return float(bin_edges[-1])
    with np.errstate(divide="ignore", invalid="ignore"):
        between = np.where(valid, w0 * w1 * (m0 / w0 - (m_total - m0) / w1) ** 2, -1.0)
    return float(bin_edges[int(np.argmax(between)) + 1])


def _box_smooth(data: FloatArray, exponent: int = 0) -> FloatArray:
    """A 3x3x3 box mean (separable, edges under-weighted) of `data` times 2**`exponent` (exact).

    Cuts noise ~5x before thresholding: without it, noisy images (SNR below ~5) leave so many
    above-threshold air voxels that the mask and its bounding box swallow the background.
    """
    out = np.ldexp(data, exponent)
    for axis in range(3):
        source = out.copy()  # each pass must read unmodified neighbours
        lo: list[slice] = [slice(None)] * 3
        hi: list[slice] = [slice(None)] * 3
        lo[axis] = slice(None, -1)
        hi[axis] = slice(1, None)
        out[tuple(hi)] += source[tuple(lo)]
        out[tuple(lo)] += source[tuple(hi)]
        del source
    out *= np.float32(1 / 27)
    return out


def _despeckle(mask: BoolArray) -> BoolArray:
    """Drop mask voxels with fewer than DESPECKLE_MIN_NEIGHBOURS of their 6 face neighbours set.

    A cheap stand-in for a morphological opening (no scipy): above-threshold noise voxels in the
    air are isolated, head voxels are not.
    """
    as_uint8 = mask.view(np.uint8)  # same-dtype adds are several times faster than bool -> uint8
    neighbours = np.zeros(mask.shape, dtype=np.uint8)
    for axis in range(3):
        lo: list[slice] = [slice(None)] * 3
        hi: list[slice] = [slice(None)] * 3
        lo[axis] = slice(None, -1)
        hi[axis] = slice(1, None)
        np.add(neighbours[tuple(hi)], as_uint8[tuple(lo)], out=neighbours[tuple(hi)])
        np.add(neighbours[tuple(lo)], as_uint8[tuple(hi)], out=neighbours[tuple(lo)])
    result: BoolArray = mask & (neighbours >= DESPECKLE_MIN_NEIGHBOURS)
    return result


def _fill_enclosed(mask: BoolArray) -> BoolArray:
    """`mask` plus the voxels that have mask on both sides along all three axes (in place).

    A cheap approximation of hole filling (no connected components): fills ventricles and other
    enclosed dark regions, leaves open concavities mostly alone. Enclosed voxels lie inside the
    mask's bounding box, so the work is done on that crop only.
    """
    if not mask.any():
        return mask
    box = []
    for axes in ((1, 2), (0, 2), (0, 1)):
        occupied = np.flatnonzero(np.count_nonzero(mask, axis=axes))
        box.append(slice(int(occupied[0]), int(occupied[-1]) + 1))
    crop = mask[tuple(box)]
    enclosed: BoolArray | None = None
    for axis in range(3):
        before = np.logical_or.accumulate(crop, axis=axis)
        after = np.flip(np.logical_or.accumulate(np.flip(crop, axis), axis=axis), axis)
        before &= after
        if enclosed is None:
            enclosed = before
        else:
            enclosed &= before
    assert enclosed is not None
    crop |= enclosed  # `crop` is a view: this writes into `mask`
    return mask


# --- measures -------------------------------------------------------------------------------------


def _bbox(profiles: list[npt.NDArray[np.intp]]) -> list[tuple[int, int]]:
    """Per axis, the first and last slice holding at least 1% of the fullest slice's mask voxels.

    The 1% floor keeps a few surviving noise voxels from stretching the box to the whole image.
    """
    box = []
    for profile in profiles:
        keep = np.flatnonzero(profile >= max(1, 0.01 * profile.max()))
        box.append((int(keep[0]), int(keep[-1])))
    return box


def _outside_box(array: npt.NDArray[Any], box: list[tuple[int, int]]) -> npt.NDArray[Any]:
    """The values of `array` outside `box` (inclusive bounds), as one 1-D array, without overlap."""
    (x0, x1), (y0, y1), (z0, z1) = box
    inner_x = slice(x0, x1 + 1)
    inner_y = slice(y0, y1 + 1)
    parts = [
        array[:x0],
        array[x1 + 1 :],
        array[inner_x, :y0],
        array[inner_x, y1 + 1 :],
        array[inner_x, inner_y, :z0],
        array[inner_x, inner_y, z1 + 1 :],
    ]
    return np.concatenate([part.ravel() for part in parts])


def value_percentiles(values: FloatArray, percentiles: Sequence[float]) -> npt.NDArray[np.float64]:
    """numpy's default (linear) percentiles, interpolated in float64: in float32 the step between
    two values of opposite sign near +-3.4e38 overflows."""
    flat = values.ravel()
    position = np.asarray(percentiles, dtype=np.float64) / 100.0 * (flat.size - 1)
    below = np.floor(position).astype(np.intp)
    above = np.minimum(below + 1, flat.size - 1)
    ordered = np.partition(flat, np.unique(np.concatenate([below, above])))
    low, high = ordered[below].astype(np.float64), ordered[above].astype(np.float64)
    result: npt.NDArray[np.float64] = low + (high - low) * (position - below)
    return result


def _moments(values: FloatArray) -> tuple[float, float]:
    """Mean and standard deviation accumulated in float64 without a float64 copy of the data."""
    flat = values.ravel()
    n = flat.size
    mean = float(flat.sum(dtype=np.float64)) / n
    sum_sq = float(np.einsum("i,i->", flat, flat, dtype=np.float64))
    return mean, math.sqrt(max(sum_sq / n - mean * mean, 0.0))


def _noise(data: FloatArray, mask: BoolArray, box: list[tuple[int, int]], fg_mean: float) -> dict[str, Any]:
    """Noise sigma from the air: voxels outside the foreground's margin-expanded box and its mask.

    No intensity cut: clipping at the threshold would truncate the noise tail and bias sigma low
    at low SNR; anything bright out there is already in the mask.
    """
    values = _outside_box(data, box)[~_outside_box(mask, box)]
    result: dict[str, Any] = {
        "region": "outside the foreground's bounding box plus margin, foreground voxels excluded",
        "background_voxels": int(values.size),
        "model": None,
        "background_mean": None,
        "background_std": None,
        "sigma": None,
        "note": None,
    }
    if values.size < MIN_BACKGROUND_VOXELS:
        result["note"] = "too little background outside the foreground to estimate noise"
        return result
    bg_mean, bg_std = _moments(values)
    result["background_mean"] = _num(bg_mean)
    result["background_std"] = _num(bg_std)
    zero_fraction = np.count_nonzero(values == 0) / values.size
    # Relative to the foreground only: a volume scaled to tiny values has tiny noise, not none.
    if zero_fraction > ZERO_FILLED_FRACTION or bg_std <= 1e-6 * abs(fg_mean):
        result["note"] = (
            f"background is zero-filled or constant ({zero_fraction:.0%} exact zeros): the image was "
            "masked, skull-stripped or synthesised, so noise is not measurable and SNR is not reported"
        )
        return result
    if np.count_nonzero(values < 0) > 0.05 * values.size:
        # Signed background values: real-valued (e.g. Gaussian) noise, its std is sigma.
        result["model"] = "gaussian"
        result["sigma"] = _num(bg_std)
    else:
        result["model"] = "rayleigh"
        result["sigma"] = _num(bg_std / RAYLEIGH_STD_FACTOR)
    return result


def _two_class_contrast(tissue: FloatArray, sigma: float | None) -> dict[str, Any] | None:
    """Contrast between the lower and upper intensity modes of the foreground tissue.

    CNR = |mu_hi - mu_lo| / sqrt(sd_lo^2 + sd_hi^2 + sigma^2), as MRIQC defines it for GM/WM; the
    modes are split by Otsu within the tissue (about GM vs WM in a skull-stripped T1).
    """
    if tissue.size < 2:
        return None
    lo_v, hi_v = float(tissue.min()), float(tissue.max())
    if hi_v <= lo_v:
        return None
    # float64 edges: float32 ones collapse on a narrow range (values scaled to tiny magnitudes).
    hist, edges = np.histogram(tissue, bins=HISTOGRAM_BINS, range=(np.float64(lo_v), np.float64(hi_v)))
    split = otsu_threshold(hist, edges)
    upper = tissue >= split
    low, high = tissue[~upper], tissue[upper]
    if low.size == 0 or high.size == 0:
        return None
    (mu_lo, sd_lo), (mu_hi, sd_hi) = _moments(low), _moments(high)
    denominator = math.sqrt(sd_lo**2 + sd_hi**2 + (sigma or 0.0) ** 2)
    return {
        "cnr": _num(abs(mu_hi - mu_lo) / denominator, 4) if denominator > 0 else None,
        "split": _num(split),
        "low_mean": _num(mu_lo),
        "low_std": _num(sd_lo),
        "high_mean": _num(mu_hi),
        "high_std": _num(sd_hi),
        "noise_included": sigma is not None,
    }


# --- previews -------------------------------------------------------------------------------------


def preview_slices(
    data: FloatArray, centre: tuple[int, int, int], zooms: npt.NDArray[np.float64], radiological: bool
) -> dict[str, tuple[FloatArray, float, float]]:
    """Each view as a 2-D (rows, cols) array in display order, with its column and row spacing (mm).

    RAS voxel axes: i grows to the patient's right, j anterior, k superior. Rows run top-down, so
    superior/anterior rows are reversed to come first.
    """
    i, j, k = centre
    zx, zy, zz = (float(z) for z in zooms)
    axial = data[:, :, k].T[::-1, :]  # rows anterior -> posterior, cols patient left -> right
    coronal = data[:, j, :].T[::-1, :]  # rows superior -> inferior, cols patient left -> right
    sagittal = data[i, :, :].T[::-1, ::-1]  # rows superior -> inferior, cols anterior -> posterior
    if radiological:
        # Radiological: the patient's right on the viewer's left, as if facing the patient.
        axial, coronal = axial[:, ::-1], coronal[:, ::-1]
    return {
        "axial": (axial, zx, zy),
        "coronal": (coronal, zx, zz),
        "sagittal": (sagittal, zy, zz),
    }


def _to_png(plane: FloatArray, window: tuple[float, float], size: tuple[int, int]) -> bytes:
    lo, hi = window
    scale = 255.0 / (hi - lo) if hi > lo else 0.0
    # float64: in float32 the offset overflows near +-3.4e38 and the scale for a tiny window.
    grey = np.clip((plane.astype(np.float64) - lo) * scale + 0.5, 0, 255).astype(np.uint8)
    image = PILImage.fromarray(np.ascontiguousarray(grey))
    if image.size != size:
        # Bilinear: Pillow's resize antialiases when shrinking and does not ring on thick slices.
        image = image.resize(size, PILImage.Resampling.BILINEAR)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


# --- the analysis, one function per phase ---------------------------------------------------------


@dataclass(frozen=True)
class Foreground:
    """The foreground mask and what the later phases read of it."""

    mask: BoolArray
    threshold: float  # Otsu's threshold of the smoothed volume, in the volume's intensity units
    profiles: tuple[npt.NDArray[np.intp], ...]  # mask voxels per slice along i, j and k
    count: int  # mask voxels

    def centre(self) -> tuple[int, int, int]:
        """The mask's centroid (voxel indices); the volume's middle when there is no mask."""
        if not self.count:
            i, j, k = (int(n) // 2 for n in self.mask.shape)
            return (i, j, k)
        ci, cj, ck = (round(float((np.arange(p.size) * p).sum()) / self.count) for p in self.profiles)
        return (ci, cj, ck)


def canonical_voxels(source: Image, warnings: list[str]) -> tuple[Image, FloatArray, int, int]:
    """The first volume in RAS+ order, its float32 voxels (NaN/Inf set to 0), the number of volumes
    of `source` and of non-finite voxels."""
    volumes = int(np.prod(source.shape[3:])) if source.ndim > 3 else 1
    if volumes > 1:
        warnings.append(f"image has {volumes} volumes; QC describes the first")
    img = canonical(first_volume(source))
    data = voxel_data(img)
    nonfinite = int(data.size - np.count_nonzero(np.isfinite(data)))
    if nonfinite:
        warnings.append(f"{nonfinite} non-finite voxels (NaN/inf) were treated as 0")
        data = np.nan_to_num(data, nan=0.0, posinf=0.0, neginf=0.0)  # a copy: `data` may be cached
    return img, data, volumes, nonfinite


def header_measures(
    img: Image, source: Image, original_orientation: tuple[str, str, str], volumes: int, warnings: list[str]
) -> dict[str, Any]:
    """Geometry and storage of the canonical volume `img`, with `source`'s data type and scaling."""
    affine = img.affine
    zooms = voxel_sizes(affine)
    shape = tuple(int(s) for s in img.shape[:3])
    oblique_deg = obliquity_deg(affine)
    header: Any = img.header  # nibabel headers are untyped
    sform_code = int(header.get_sform(coded=True)[1])
    qform_code = int(header.get_qform(coded=True)[1])
    if sform_code == 0 and qform_code == 0:
        warnings.append("sform and qform codes are both 0: the affine is a guess (unknown space)")
    pixdim = np.asarray(header.get_zooms()[:3], dtype=np.float64)
    if not np.allclose(pixdim, zooms, rtol=0.01):
        warnings.append("header pixdim disagrees with the affine's voxel sizes; the affine was used")
    if float(oblique_deg.max()) > OBLIQUE_DEG:
        warnings.append(f"oblique acquisition: axes up to {float(oblique_deg.max()):.2f} deg off cardinal")
    source_header: Any = source.header
    slope, inter = source_header.get_slope_inter()
    return {
        "dimensions": list(shape),
        "volumes": volumes,
        "voxel_size_mm": [_mm(z) for z in zooms],
        "field_of_view_mm": [_mm(n * z) for n, z in zip(shape, zooms, strict=True)],
        "voxel_volume_mm3": _mm(np.prod(zooms)),
        "datatype": str(source_header.get_data_dtype()),
        "scaling": (
            None
            if slope is None
            else {"slope": _num(slope), "intercept": _num(inter if inter is not None else 0.0)}
        ),
        "orientation_original": "".join(original_orientation),
        "orientation_canonical": "".join(orientation(affine)),
        "determinant_sign_original": handedness(original_orientation),
        "determinant_sign": 1 if np.linalg.det(affine[:3, :3]) > 0 else -1,
        "obliquity_deg": [round(float(a), 3) for a in oblique_deg],
        "oblique": bool(oblique_deg.max() > OBLIQUE_DEG),
        "sform_code": sform_code,
        "qform_code": qform_code,
    }


def intensity_measures(
    data: FloatArray, value_range: tuple[float, float], percentiles: Sequence[float], nonfinite: int
) -> dict[str, Any]:
    """Statistics over the whole volume (accumulated in float64: any finite float32 volume)."""
    mean, std = _moments(data)
    pcts = value_percentiles(data, percentiles)
    return {
        "min": _num(value_range[0]),
        "max": _num(value_range[1]),
        "mean": _num(mean),
        "std": _num(std),
        "percentiles": {_pct_key(p): _num(v) for p, v in zip(percentiles, pcts, strict=True)},
        "zero_fraction": round(int(np.count_nonzero(data == 0)) / data.size, 5),
        "nonfinite_fraction": round(nonfinite / data.size, 5),
    }


def find_foreground(data: FloatArray, value_range: tuple[float, float], warnings: list[str]) -> Foreground:
    """Otsu on the whole histogram of the 3x3x3-smoothed volume, despeckled, enclosed holes filled.

    The smoothing and the histogram run on the volume times a power of two that brings its values
    within +-1, which is exact: sums cannot overflow near float32's 3.4e38, tiny (subnormal) values
    keep their digits, and the histogram's 1024 bins stay distinct whatever the range's width.
    """
    vmin, vmax = value_range
    if not vmax > vmin:
        warnings.append("image is constant: no foreground")
        mask = np.zeros(data.shape, dtype=np.bool_)
        return Foreground(mask, vmax, tuple(np.zeros(n, dtype=np.intp) for n in data.shape), 0)
    exponent = -math.frexp(max(abs(vmin), abs(vmax)))[1]
    smooth = _box_smooth(data, exponent)
    # float64 edges: float32 ones collapse on a narrow range.
    low, high = np.float64(smooth.min()), np.float64(smooth.max())
    hist, edges = np.histogram(smooth, bins=HISTOGRAM_BINS, range=(low, high))
    scaled_threshold = otsu_threshold(hist, edges)
    mask = _fill_enclosed(_despeckle(smooth >= scaled_threshold))
    del smooth
    profiles = tuple(np.count_nonzero(mask, axis=axes) for axes in ((1, 2), (0, 2), (0, 1)))
    return Foreground(mask, math.ldexp(scaled_threshold, -exponent), profiles, int(profiles[0].sum()))


def foreground_measures(fg: Foreground, zooms: npt.NDArray[np.float64]) -> dict[str, Any]:
    """The mask's threshold, size and centre; `intensity` is filled in by foreground_intensity."""
    return {
        "method": "Otsu threshold of the 3x3x3-smoothed volume, speckle removed, enclosed holes filled",
        "threshold": _num(fg.threshold),
        "fraction": round(fg.count / fg.mask.size, 5),
        "volume_ml": round(fg.count * float(np.prod(zooms)) / 1000.0, 2),
        "centre_voxel": list(fg.centre()) if fg.count else None,
        "intensity": None,
    }


def foreground_intensity(
    fg_values: FloatArray, percentiles: Sequence[float]
) -> tuple[dict[str, Any], float, tuple[float, float]]:
    """Statistics of the foreground voxels, their mean, and the preview window (their 1st-99th
    percentiles)."""
    fg_mean, fg_std = _moments(fg_values)
    quantiles = sorted({*percentiles, 1.0, 99.0})
    by_percentile = dict(zip(quantiles, value_percentiles(fg_values, quantiles), strict=True))
    measures = {
        "mean": _num(fg_mean),
        "std": _num(fg_std),
        "percentiles": {_pct_key(p): _num(by_percentile[p]) for p in percentiles},
    }
    return measures, fg_mean, (float(by_percentile[1.0]), float(by_percentile[99.0]))


def noise_measures(
    data: FloatArray, fg: Foreground, zooms: npt.NDArray[np.float64], margin_mm: float, fg_mean: float
) -> tuple[dict[str, Any], float | None]:
    """Noise from the background beyond the foreground's box plus `margin_mm`, and the SNR."""
    margin = [math.ceil(margin_mm / float(z)) for z in zooms]
    box = [
        (max(a - m, 0), min(b + m, n - 1))
        for (a, b), m, n in zip(_bbox(list(fg.profiles)), margin, data.shape, strict=True)
    ]
    noise = _noise(data, fg.mask, box, fg_mean)
    sigma = noise["sigma"]
    return noise, (_num(fg_mean / sigma, 4) if sigma else None)


def preview_images(
    data: FloatArray,
    centre: tuple[int, int, int],
    window: tuple[float, float],
    zooms: npt.NDArray[np.float64],
    params: QCParameters,
) -> tuple[dict[str, Any], dict[str, bytes]]:
    """Three orthogonal PNGs through `centre`, at one mm per pixel for all three (the finest voxel
    size, shrunk so the longest side fits preview_max_px); and what they show."""
    radiological = params.display_convention == "radiological"
    views = preview_slices(data, centre, zooms, radiological)
    mm_per_px = float(zooms.min())
    extents = [(p.shape[1] * cs, p.shape[0] * rs) for p, cs, rs in views.values()]
    longest = max(max(w, h) for w, h in extents) / mm_per_px
    if longest > params.preview_max_px:
        mm_per_px *= longest / params.preview_max_px
    artifacts: dict[str, bytes] = {}
    sizes: dict[str, list[int]] = {}
    for (view, (plane, col_mm, row_mm)), name in zip(views.items(), PREVIEWS, strict=True):
        size = (
            max(1, round(plane.shape[1] * col_mm / mm_per_px)),
            max(1, round(plane.shape[0] * row_mm / mm_per_px)),
        )
        artifacts[name] = _to_png(plane, window, size)
        sizes[view] = list(size)
    side = "patient's right on the image left" if radiological else "patient's right on the image right"
    preview = {
        "convention": params.display_convention,
        "orientation": {
            "axial": f"{side}, anterior at the top",
            "coronal": f"{side}, superior at the top",
            "sagittal": "anterior on the image left, superior at the top",
        },
        "slice_voxel": list(centre),
        "window": [_num(window[0]), _num(window[1])],
        "mm_per_pixel": round(mm_per_px, 4),
        "sizes_px": sizes,
    }
    return preview, artifacts


def run_qc(inp: AnalysisInput) -> AnalysisOutput:
    params = QCParameters.from_mapping(inp.parameters)
    warnings: list[str] = []
    img, data, volumes, nonfinite = canonical_voxels(inp.image, warnings)
    zooms = voxel_sizes(img.affine)
    value_range = (float(data.min()), float(data.max()))
    header = header_measures(img, inp.image, inp.original_orientation, volumes, warnings)
    intensity = intensity_measures(data, value_range, params.percentiles, nonfinite)
    fg = find_foreground(data, value_range, warnings)
    foreground = foreground_measures(fg, zooms)
    noise: dict[str, Any] = {"note": "no foreground: noise not estimated", "sigma": None}
    snr: float | None = None
    contrast: dict[str, Any] | None = None
    if fg.count:
        fg_values = data[fg.mask]
        foreground["intensity"], fg_mean, window = foreground_intensity(fg_values, params.percentiles)
        noise, snr = noise_measures(data, fg, zooms, params.background_margin_mm, fg_mean)
        contrast = _two_class_contrast(fg_values[fg_values >= np.float64(fg.threshold)], noise["sigma"])
        del fg_values
    else:
        low_high = value_percentiles(data, (1.0, 99.0))
        window = (float(low_high[0]), float(low_high[1]))
    if window[1] <= window[0]:
        window = value_range
    preview, artifacts = preview_images(data, fg.centre(), window, zooms, params)
    measures: dict[str, Any] = {
        "header": header,
        "intensity": intensity,
        "foreground": foreground,
        "noise": noise,
        "snr": snr,
        "cnr": contrast["cnr"] if contrast else None,
        "contrast": contrast,
        "preview": preview,
        "warnings": warnings,
    }
    return AnalysisOutput(measures=measures, artifacts=artifacts)
