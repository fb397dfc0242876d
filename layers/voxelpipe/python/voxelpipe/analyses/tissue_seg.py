"""The `tissue-seg` analysis: brain mask and GM/WM/CSF segmentation of a T1-weighted volume.

The algorithm is `voxelpipe.segmentation` (torch: brain extraction unless the input is already
skull-stripped, N4 bias correction through SimpleITK, an EM Gaussian mixture with a mean-field MRF prior), run
on the canonical RAS volume the analysis receives. Outputs, on the input's own grid when its
affine and shape are given (`to_original_space`), else on the canonical grid:

* `labels.nii.gz` -- uint8: 0 background (outside the brain mask), 1 CSF, 2 GM, 3 WM;
* `prob_csf.nii.gz`, `prob_gm.nii.gz`, `prob_wm.nii.gz` -- float32 tissue probabilities, 0
  outside the mask, summing to 1 inside (soft at boundaries: partial volume counts);
* `brain_mask.nii.gz` -- uint8 0/1;
* `overlay_axial.png`, `overlay_coronal.png`, `overlay_sagittal.png` -- the labels over the T1
  through the brain's centre, in qc's display convention.

Going back to the input's grid is an exact reordering of voxels (the canonical volume is the
input's voxels with axes permuted and flipped), so labels and probabilities are not interpolated;
a grid that is not a reordering is resampled (labels nearest, probabilities linear).
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import numpy.typing as npt
from PIL import Image as PILImage

from voxelpipe.analyses.catalogue import TISSUE_SEG as TISSUE_SEG
from voxelpipe.analyses.catalogue import (
    TISSUE_SEG_BRAIN_T1_FILE,
    TISSUE_SEG_LABELS_FILE,
    TISSUE_SEG_MASK_FILE,
    TISSUE_SEG_OUTPUTS,
    TISSUE_SEG_OVERLAYS,
    TISSUE_SEG_PARAMETERS,
    TISSUE_SEG_PROBABILITY_FILES,
    AnalysisInput,
    AnalysisOutput,
    merged_parameters,
)
from voxelpipe.analyses.qc import DisplayConvention, preview_parameters, preview_slices, value_percentiles
from voxelpipe.nifti import to_nifti_bytes
from voxelpipe.tissues import COLOURS as TISSUE_COLOURS
from voxelpipe.tissues import LABELS, TISSUES
from voxelpipe.volume import Image, canonical, first_volume, new_image, orientation, voxel_data, voxel_sizes

# torch and the segmentation code load on first use: the catalogue, which the light Lambdas
# import (without torch), only names this analysis.
if TYPE_CHECKING:
    from voxelpipe.segmentation import Segmentation, SegmentationParameters

FloatArray = npt.NDArray[np.float32]
LABELS_FILE = TISSUE_SEG_LABELS_FILE
MASK_FILE = TISSUE_SEG_MASK_FILE
PROBABILITY_FILES = TISSUE_SEG_PROBABILITY_FILES
OVERLAYS = TISSUE_SEG_OVERLAYS
OUTPUTS = TISSUE_SEG_OUTPUTS
BRAIN_T1_FILE = TISSUE_SEG_BRAIN_T1_FILE
DEFAULT_PARAMETERS = TISSUE_SEG_PARAMETERS

# Overlay colours (RGB) by label value (0: background), tissues.COLOURS; and the opacity.
_COLOURS = np.array([[0, 0, 0], *(TISSUE_COLOURS[t] for t in TISSUES)], dtype=np.float32)
_ALPHA = 0.45


@dataclass(frozen=True)
class TissueSegParameters:
    skull_stripped: bool | None
    bias_correction: Literal["auto", "on", "off"]
    mrf_beta: float
    device: str | None
    preview_max_px: int
    display_convention: DisplayConvention

    @classmethod
    def from_mapping(cls, given: Mapping[str, Any]) -> TissueSegParameters:
        """Defaults overlaid with `given`; unknown names and bad values raise ValueError."""
        merged = merged_parameters("tissue-seg", DEFAULT_PARAMETERS, given)
        stripped = merged["skull_stripped"]
        if stripped not in ("auto", True, False):
            raise ValueError("skull_stripped must be 'auto', true or false")
        bias = merged["bias_correction"]
        if bias not in ("auto", "on", "off"):
            raise ValueError("bias_correction must be 'auto', 'on' or 'off'")
        beta = merged["mrf_beta"]
        if isinstance(beta, bool) or not isinstance(beta, int | float) or not 0 <= beta <= 20:
            raise ValueError("mrf_beta must be a number in [0, 20]")
        device = merged["device"]
        if device not in ("auto", "cpu", "cuda"):
            raise ValueError("device must be 'auto', 'cpu' or 'cuda'")
        max_px, convention = preview_parameters(merged)
        return cls(
            skull_stripped=None if stripped == "auto" else bool(stripped),
            bias_correction=bias,
            mrf_beta=float(beta),
            device=None if device == "auto" else device,
            preview_max_px=max_px,
            display_convention=convention,
        )

    def segmentation(self) -> SegmentationParameters:
        from voxelpipe.segmentation import BiasParameters, EMParameters, SegmentationParameters

        return SegmentationParameters(
            skull_stripped=self.skull_stripped,
            bias=self.bias_correction,
            bias_parameters=BiasParameters(),
            em=EMParameters(mrf_beta=self.mrf_beta),
        )


@dataclass(frozen=True)
class GridArrays:
    """The segmentation's volumes on one voxel grid."""

    labels: npt.NDArray[np.uint8]
    probabilities: FloatArray  # (3, X, Y, Z): CSF, GM, WM
    brain_mask: npt.NDArray[np.uint8]
    affine: npt.NDArray[np.float64]


def segment_image(img: Image, params: TissueSegParameters) -> tuple[Segmentation, Image, FloatArray]:
    """The segmentation of `img`'s first volume in canonical RAS: (result, canonical image, voxels)."""
    import torch

    from voxelpipe.segmentation import segment

    if params.device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for, but CUDA is not available here")
    canon = canonical(first_volume(img))
    data = voxel_data(canon)
    zooms = voxel_sizes(canon.affine)
    result = segment(data, [float(z) for z in zooms], params.segmentation(), params.device)
    return result, canon, data


def canonical_arrays(result: Segmentation, canonical_affine: npt.ArrayLike) -> GridArrays:
    return GridArrays(
        labels=result.labels,
        probabilities=result.probabilities,
        brain_mask=result.brain.mask.astype(np.uint8),
        affine=np.asarray(canonical_affine, dtype=np.float64),
    )


def to_original_space(
    arrays: GridArrays,
    original_affine: npt.ArrayLike,
    original_shape: Sequence[int],
    device: str | None = None,
) -> GridArrays:
    """`arrays` (on the canonical grid) on the input's grid: `original_affine`, `original_shape[:3]`.

    An exact reordering when the canonical grid is the input's reoriented (always, for the volume
    AnalysisInput carries); otherwise labels and mask are resampled nearest, probabilities linear.
    """
    from voxelpipe.segmentation import to_grid

    shape = [int(n) for n in original_shape[:3]]
    affine = np.asarray(original_affine, dtype=np.float64)
    labels = to_grid(arrays.labels, arrays.affine, affine, shape, "nearest", device)
    probabilities = to_grid(arrays.probabilities, arrays.affine, affine, shape, "linear", device)
    mask = to_grid(arrays.brain_mask, arrays.affine, affine, shape, "nearest", device)
    return GridArrays(
        labels=np.asarray(labels, dtype=np.uint8),
        probabilities=np.asarray(probabilities, dtype=np.float32),
        brain_mask=np.asarray(mask, dtype=np.uint8),
        affine=affine,
    )


def nifti_artifacts(arrays: GridArrays) -> dict[str, bytes]:
    """The label map, probability maps and brain mask as gzipped NIfTI-1 on `arrays.affine`."""
    out = {LABELS_FILE: to_nifti_bytes(new_image(arrays.labels, arrays.affine), compress=True)}
    for index, tissue in enumerate(TISSUES):
        image = new_image(np.ascontiguousarray(arrays.probabilities[index]), arrays.affine)
        out[PROBABILITY_FILES[tissue]] = to_nifti_bytes(image, compress=True)
    out[MASK_FILE] = to_nifti_bytes(new_image(arrays.brain_mask, arrays.affine), compress=True)
    return out


def _png_rgb(rgb: npt.NDArray[np.uint8], size: tuple[int, int]) -> bytes:
    image = PILImage.fromarray(np.ascontiguousarray(rgb))  # (rows, cols, 3) uint8: RGB
    if image.size != size:
        # Nearest keeps label colours pure (bilinear would blend them into colours of no tissue).
        image = image.resize(size, PILImage.Resampling.NEAREST)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def overlay_previews(
    t1: FloatArray,
    labels: npt.NDArray[np.integer[Any]],
    mask: npt.NDArray[np.bool_],
    zooms: npt.NDArray[np.float64],
    max_px: int,
    radiological: bool,
    *,
    palette: npt.NDArray[np.float32] = _COLOURS,
    centre: tuple[int, int, int] | None = None,
    names: Sequence[str] = OVERLAYS,
) -> tuple[dict[str, bytes], dict[str, Any]]:
    """RGB PNGs of `labels` (values index `palette`'s RGB rows; 0 is not drawn) over the T1
    (canonical RAS arrays) through `centre` (default: the brain's centre).

    Same slicing, orientation and one-mm-per-pixel scale as qc's previews; the grey window is the
    brain's 1st-99th intensity percentile.
    """
    if mask.any():
        lo, hi = (float(v) for v in value_percentiles(t1[mask], (1, 99)))  # in float64: any finite T1
        if centre is None:
            # The centre of the mask's bounding box: the brain's middle whatever its shape.
            box = [np.flatnonzero(np.any(mask, axis=axes)) for axes in ((1, 2), (0, 2), (0, 1))]
            centre = (
                (int(box[0][0]) + int(box[0][-1])) // 2,
                (int(box[1][0]) + int(box[1][-1])) // 2,
                (int(box[2][0]) + int(box[2][-1])) // 2,
            )
    else:
        lo, hi = float(t1.min()), float(t1.max())
    if centre is None:
        centre = (t1.shape[0] // 2, t1.shape[1] // 2, t1.shape[2] // 2)
    i, j, k = (int(c) for c in centre)
    grey_views = preview_slices(t1, (i, j, k), zooms, radiological)
    label_views = preview_slices(labels.astype(np.float32), (i, j, k), zooms, radiological)
    mm_per_px = float(zooms.min())
    longest = max(max(p.shape[1] * c, p.shape[0] * r) for p, c, r in grey_views.values()) / mm_per_px
    if longest > max_px:
        mm_per_px *= longest / max_px
    scale = 1.0 / (hi - lo) if hi > lo else 0.0
    artifacts: dict[str, bytes] = {}
    sizes: dict[str, list[int]] = {}
    for (view, (plane, col_mm, row_mm)), name in zip(grey_views.items(), names, strict=True):
        grey = np.clip((plane.astype(np.float64) - lo) * scale, 0.0, 1.0)[..., None] * 255.0
        label_plane = label_views[view][0].astype(np.intp)
        colour = palette[label_plane]
        alpha = np.where(label_plane[..., None] > 0, _ALPHA, 0.0)
        rgb = (grey * (1 - alpha) + colour * alpha + 0.5).astype(np.uint8)
        size = (
            max(1, round(plane.shape[1] * col_mm / mm_per_px)),
            max(1, round(plane.shape[0] * row_mm / mm_per_px)),
        )
        artifacts[name] = _png_rgb(rgb, size)
        sizes[view] = list(size)
    info = {
        "slice_voxel_canonical": [i, j, k],
        "convention": "radiological" if radiological else "neurological",
        "window": [round(lo, 4), round(hi, 4)],
        "mm_per_pixel": round(mm_per_px, 4),
        "sizes_px": sizes,
    }
    return artifacts, info


def _round(value: float, digits: int = 6) -> float | None:
    return float(f"{value:.{digits}g}") if math.isfinite(value) else None


def segmentation_measures(result: Segmentation, arrays: GridArrays, space: str) -> dict[str, Any]:
    """What results.json records of a segmentation (volumes are the `volumetrics` analysis')."""
    tissues = result.tissues
    check = result.brain.check
    counts = np.bincount(arrays.labels.ravel(), minlength=4)
    return {
        "labels": {str(value): name for name, value in LABELS.items()},
        "space": space,
        "grid": {
            "shape": [int(n) for n in arrays.labels.shape],
            "orientation": "".join(orientation(arrays.affine)),
            "voxel_size_mm": [round(float(z), 4) for z in voxel_sizes(arrays.affine)],
        },
        "brain_mask": {
            "skull_stripped_input": result.brain.skull_stripped,
            "method": result.brain.method,
            "detection": None
            if check is None
            else {
                "skull_stripped": check.skull_stripped,
                "background_fraction": check.background_fraction,
                "foreground_ml": check.foreground_ml,
                "component_fraction": check.component_fraction,
                "reason": check.reason,
            },
            "volume_ml": result.brain.volume_ml,
        },
        "bias_field": {
            "method": result.bias.method,
            "library": result.bias.library,
            "span": result.bias.span,
            "applied": result.bias.applied,
            "shrink_factor": result.bias.shrink,
            "fitting_levels": result.bias.levels,
            "iterations": result.bias.iterations,
            "converged": result.bias.converged,
        },
        "mixture": {
            "gaussians": [
                {"tissue": TISSUES[t], "mean": _round(mu), "std": _round(sd), "weight": round(w, 5)}
                for t, mu, sd, w in zip(
                    tissues.tissue_of, tissues.means, tissues.stds, tissues.weights, strict=True
                )
            ],
            "iterations": list(tissues.iterations),
            "converged": tissues.converged,
            "log_likelihood": _round(tissues.log_likelihood),
        },
        "label_voxels": {name: int(counts[LABELS[name]]) for name in TISSUES},
        "device": result.device,
        "timings_s": result.timings_s,
        "warnings": list(tissues.warnings),
    }


def tissue_seg_output(
    inp: AnalysisInput,
    original_affine: npt.ArrayLike | None = None,
    original_shape: Sequence[int] | None = None,
) -> AnalysisOutput:
    """The analysis' output; on the input's grid when `original_affine` and `original_shape` are
    given (pass the uploaded image's), else on the canonical RAS grid of `inp.image`."""
    params = TissueSegParameters.from_mapping(inp.parameters)
    result, canon, data = segment_image(inp.image, params)
    arrays = canonical_arrays(result, canon.affine)
    zooms = voxel_sizes(canon.affine)
    previews, preview_info = overlay_previews(
        data,
        result.labels,
        result.brain.mask,
        zooms,
        params.preview_max_px,
        params.display_convention == "radiological",
    )
    space = "canonical"
    if original_affine is not None and original_shape is not None:
        arrays = to_original_space(arrays, original_affine, original_shape, params.device)
        space = "original"
    measures = segmentation_measures(result, arrays, space)
    measures["preview"] = {**preview_info, "colours": {"csf": "blue", "gm": "green", "wm": "yellow"}}
    return AnalysisOutput(
        measures=measures,
        artifacts={**nifti_artifacts(arrays), **previews},
        intermediates={BRAIN_T1_FILE: brain_t1(result, canon, data)},
    )


def brain_t1(result: Segmentation, canon: Image, data: FloatArray) -> bytes:
    """The bias-corrected T1 inside the brain mask, zero outside, on the canonical grid (gzipped
    NIfTI): what registration aligns the template to (skull-stripped like it, free of the field)."""
    field = result.bias.field if result.bias.applied else 1.0
    corrected = np.where(result.brain.mask, data / np.maximum(field, 1e-6), 0.0).astype(np.float32)
    return to_nifti_bytes(new_image(corrected, canon.affine), compress=True)


def run_tissue_seg(inp: AnalysisInput) -> AnalysisOutput:
    # Outputs go back to the upload's own grid and orientation.
    return tissue_seg_output(inp, inp.original_affine, inp.original_shape)
