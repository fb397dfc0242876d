"""tissue-seg on nilearn's MNI152 T1 against the template's own GM/WM maps, and on degraded versions
of it (bias field, Rician noise, another voxel size, LPS and oblique grids, skull and scalp around
it): full-resolution runs, so an integration test (the building blocks are tested in
tests/unit/test_segmentation.py).

Dice thresholds: the clean scan must reach the issue's targets (GM >= 0.92, WM >= 0.95); the
degraded ones sit 0.02-0.03 below what they measured when written (bench/segmentation_accuracy.py
prints them), so a regression of a few points fails.
"""

from __future__ import annotations

import io
import math

import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image
from scipy import ndimage

from infra.local.samples import mni152_t1_path
from tests.fixtures.segmentation import bias_field, dice, resample_to
from voxelpipe.analyses.catalogue import AnalysisInput, AnalysisOutput
from voxelpipe.analyses.tissue_seg import (
    OUTPUTS,
    PROBABILITY_FILES,
    tissue_seg_output,
)
from voxelpipe.nifti import load_nifti
from voxelpipe.segmentation import (
    EMParameters,
    SegmentationParameters,
    detect_skull_stripped,
    segment,
    segment_tissues,
)
from voxelpipe.volume import canonical, orientation, voxel_data

MNI_T1 = mni152_t1_path()
MNI_GM = MNI_T1.parent / "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz"
MNI_WM = MNI_T1.parent / "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz"

# CPU vs CUDA: labels inside the brain mask agree on at least this share (float32 rounding can
# flip voxels sitting on a decision boundary; nothing else differs between the devices).
DEVICE_LABEL_AGREEMENT = 0.999
DEVICE_PROBABILITY_ATOL = 1e-3  # mean absolute difference of the probability maps


# --- helpers ---


def _maps(img: nib.Nifti1Image) -> np.ndarray:
    """The template's probability maps are uint8 0..255 without scaling: as probabilities."""
    return img.get_fdata(dtype=np.float32) / 255.0


def _rician(data: np.ndarray, sigma: float, seed: int = 0) -> np.ndarray:
    """Magnitude of the signal plus complex Gaussian noise of `sigma` per channel."""
    rng = np.random.default_rng(seed)
    noisy = np.hypot(data + rng.normal(0, sigma, data.shape), rng.normal(0, sigma, data.shape))
    return noisy.astype(np.float32)


def _skull_phantom(
    t1: np.ndarray, voxel_mm: float = 1.0, pad: int = 24, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """The (stripped) MNI brain wrapped in CSF, a skull of varying thickness with marrow, muscle,
    scalp fat brighter than WM and skin, 2% Rician noise; returns (volume, true brain mask)."""
    brain = np.pad(t1, pad)
    inside = ndimage.binary_fill_holes(brain > 0)
    d = ndimage.distance_transform_edt(~inside) * voxel_mm  # mm from the brain
    unit = np.meshgrid(*[np.linspace(-1, 1, n) for n in brain.shape], indexing="ij")
    thick = 6 + 2 * np.sin(3 * unit[0]) * np.cos(2 * unit[1])  # 4-8 mm
    out = brain.astype(np.float32)
    skull = (d > 2.5) & (d <= 2.5 + thick)
    out[(d > 0) & (d <= 2.5)] = 45  # CSF
    out[skull] = 15
    out[skull & (d > 2.5 + 0.35 * thick) & (d <= 2.5 + 0.65 * thick)] = 110  # marrow
    out[(d > 2.5 + thick) & (d <= 5.5 + thick)] = 90  # muscle
    out[(d > 5.5 + thick) & (d <= 10.5 + thick)] = 235  # fat
    out[(d > 10.5 + thick) & (d <= 12 + thick)] = 130  # skin
    out = ndimage.gaussian_filter(out, 0.6 / voxel_mm)
    return _rician(out, 0.02 * 220, seed), np.pad(t1 > 0, pad)


def _run(img: nib.Nifti1Image, **parameters) -> AnalysisOutput:
    """tissue-seg as the pipeline runs it: canonical input, outputs on the input's grid."""
    inp = AnalysisInput(
        image=canonical(img), original_orientation=orientation(img.affine), parameters=parameters
    )
    return tissue_seg_output(inp, img.affine, img.shape)


def _labels(out: AnalysisOutput) -> nib.Nifti1Image:
    return load_nifti(out.artifacts["labels.nii.gz"])


@pytest.fixture(scope="module")
def mni() -> nib.Nifti1Image:
    return nib.load(MNI_T1)


@pytest.fixture(scope="module")
def reference() -> tuple[np.ndarray, np.ndarray]:
    """The template's GM and WM probability maps (0..1)."""
    return _maps(nib.load(MNI_GM)), _maps(nib.load(MNI_WM))


@pytest.fixture(scope="module")
def mni_output(mni) -> AnalysisOutput:
    return _run(mni)


def test_mni_dice_reaches_targets(mni_output, reference):
    gm_ref, wm_ref = reference
    labels = np.asarray(_labels(mni_output).dataobj)
    assert dice(labels == 2, gm_ref > 0.5) >= 0.92
    assert dice(labels == 3, wm_ref > 0.5) >= 0.95


def test_mni_outputs_are_well_formed(mni, mni_output):
    assert set(mni_output.artifacts) == set(OUTPUTS)
    labels_img = _labels(mni_output)
    assert labels_img.shape == mni.shape
    np.testing.assert_allclose(labels_img.affine, mni.affine)
    assert labels_img.get_data_dtype() == np.uint8
    labels = np.asarray(labels_img.dataobj)
    assert set(np.unique(labels).tolist()) == {0, 1, 2, 3}
    probs = np.stack(
        [voxel_data(load_nifti(mni_output.artifacts[PROBABILITY_FILES[t]])) for t in ("csf", "gm", "wm")]
    )
    assert probs.dtype == np.float32 and probs.min() >= 0 and probs.max() <= 1 + 1e-6
    mask = np.asarray(load_nifti(mni_output.artifacts["brain_mask.nii.gz"]).dataobj).astype(bool)
    np.testing.assert_allclose(probs.sum(0)[mask], 1.0, atol=1e-5)
    assert not probs[:, ~mask].any() and not labels[~mask].any()
    # The labels are the most probable tissue.
    np.testing.assert_array_equal(labels[mask], np.argmax(probs[:, mask], axis=0) + 1)
    # nilearn's MNI152 T1 is masked (78% exact zeros, brain only): detected as skull-stripped.
    measures = mni_output.measures
    assert measures["brain_mask"]["skull_stripped_input"] is True
    np.testing.assert_array_equal(mask, np.asarray(mni.dataobj) > 0)
    assert measures["space"] == "original" and measures["grid"]["orientation"] == "RAS"
    # A flat field: N4 finds next to nothing (its coarse mesh reads ~2 % of anatomy as field).
    bias = measures["bias_field"]
    assert bias["library"].startswith("SimpleITK") and bias["converged"] and bias["span"] < 0.05
    assert measures["mixture"]["converged"] and not measures["warnings"]
    for name in ("overlay_axial.png", "overlay_coronal.png", "overlay_sagittal.png"):
        image = Image.open(io.BytesIO(mni_output.artifacts[name]))
        assert image.format == "PNG" and image.mode == "RGB" and min(image.size) > 100


def test_deterministic(mni):
    data = voxel_data(mni)[::2, ::2, ::2]
    first = segment(data, (2.0, 2.0, 2.0))
    second = segment(data.copy(), (2.0, 2.0, 2.0))
    np.testing.assert_array_equal(first.labels, second.labels)
    np.testing.assert_array_equal(first.probabilities, second.probabilities)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device: the CPU/GPU comparison needs one")
def test_cpu_and_cuda_agree(mni):
    data = voxel_data(mni)
    cpu = segment(data, (1.0, 1.0, 1.0), device="cpu")
    gpu = segment(data, (1.0, 1.0, 1.0), device="cuda")
    assert gpu.device.startswith("cuda")
    np.testing.assert_array_equal(cpu.brain.mask, gpu.brain.mask)
    inside = cpu.brain.mask
    agreement = float(np.mean(cpu.labels[inside] == gpu.labels[inside]))
    assert agreement >= DEVICE_LABEL_AGREEMENT
    assert float(np.abs(cpu.probabilities - gpu.probabilities).mean()) <= DEVICE_PROBABILITY_ATOL


def test_bias_field_is_corrected(mni, reference):
    gm_ref, wm_ref = reference
    data = voxel_data(mni)
    mask = data > 0
    field = bias_field(data.shape, mask)  # spans 41 % over the brain (p99 / p1 - 1)
    biased = data * field
    result = segment(biased, (1.0, 1.0, 1.0))
    # N4's coarse mesh recovers ~63 % of the field's log here (its estimate spans 28 %) and nothing
    # else: the estimate follows the true field (correlation 0.89 measured).
    assert result.bias.applied and result.bias.span > 0.2
    assert np.corrcoef(np.log(result.bias.field[mask]), np.log(field[mask]))[0, 1] > 0.8
    assert dice(result.labels == 2, gm_ref > 0.5) >= 0.87
    assert dice(result.labels == 3, wm_ref > 0.5) >= 0.88
    # Without the correction the mixture fails on the same input (at 2 mm, to keep the test fast).
    coarse = np.ascontiguousarray(biased[::2, ::2, ::2])
    plain = segment(coarse, (2.0, 2.0, 2.0), SegmentationParameters(bias="off"))
    corrected = segment(coarse, (2.0, 2.0, 2.0))
    wm_coarse = wm_ref[::2, ::2, ::2] > 0.5
    assert dice(plain.labels == 3, wm_coarse) < 0.8 < dice(corrected.labels == 3, wm_coarse)


def test_rician_noise(mni, reference):
    gm_ref, wm_ref = reference
    data = voxel_data(mni)
    mask = data > 0
    # 4% of WM per channel, the background zeroed again as a stripping tool leaves it.
    noisy = np.where(mask, _rician(data, 0.04 * 220), 0).astype(np.float32)
    result = segment(noisy, (1.0, 1.0, 1.0))
    assert dice(result.labels == 2, gm_ref > 0.5) >= 0.89
    assert dice(result.labels == 3, wm_ref > 0.5) >= 0.91
    # The MRF prior is what keeps noise out of the labels (same mask, the mixture alone).
    no_prior = segment_tissues(noisy, result.brain.mask, (1.0, 1.0, 1.0), EMParameters(mrf_beta=0))
    assert dice(no_prior.labels == 3, wm_ref > 0.5) < dice(result.labels == 3, wm_ref > 0.5) - 0.02


def test_other_voxel_size(mni, reference):
    """1.5 x 1.5 x 2 mm: segmented on that grid, scored against the reference maps on it."""
    gm_ref, wm_ref = reference
    affine = mni.affine @ np.diag([1.5, 1.5, 2.0, 1.0])
    shape = (131, 155, 94)
    data = resample_to(voxel_data(mni), mni.affine, affine, shape, order=1)
    img = nib.Nifti1Image(data.astype(np.float32), affine)
    out = _run(img)
    labels = np.asarray(_labels(out).dataobj)
    assert labels.shape == shape
    gm = resample_to(gm_ref, mni.affine, affine, shape, order=1) > 0.5
    wm = resample_to(wm_ref, mni.affine, affine, shape, order=1) > 0.5
    assert dice(labels == 2, gm) >= 0.90
    assert dice(labels == 3, wm) >= 0.94


def test_lps_input_gives_lps_outputs_equal_to_ras(mni, mni_output):
    """LPS is the same voxels flipped: the outputs are the RAS outputs flipped, voxel for voxel."""
    data = np.asarray(mni.dataobj)[::-1, ::-1, :]
    flip = np.array(
        [[-1, 0, 0, data.shape[0] - 1], [0, -1, 0, data.shape[1] - 1], [0, 0, 1, 0], [0, 0, 0, 1.0]]
    )
    img = nib.Nifti1Image(np.ascontiguousarray(data), mni.affine @ flip)
    assert orientation(img.affine) == ("L", "P", "S")
    out = _run(img)
    labels_img = _labels(out)
    np.testing.assert_allclose(labels_img.affine, img.affine)
    assert orientation(labels_img.affine) == ("L", "P", "S")
    ras = np.asarray(_labels(mni_output).dataobj)
    np.testing.assert_array_equal(np.asarray(labels_img.dataobj), ras[::-1, ::-1, :])
    assert out.measures["grid"]["orientation"] == "LPS"


def test_oblique_lps_grid(mni, reference):
    """A 1.5 mm LPS grid rotated 12 and 8 degrees: results come back on exactly that grid."""
    gm_ref, wm_ref = reference
    a, b = math.radians(12), math.radians(8)
    rx = np.array([[1, 0, 0], [0, math.cos(a), -math.sin(a)], [0, math.sin(a), math.cos(a)]])
    rz = np.array([[math.cos(b), -math.sin(b), 0], [math.sin(b), math.cos(b), 0], [0, 0, 1]])
    linear = rz @ rx @ np.diag([-1.5, -1.5, 1.5])
    shape = (140, 165, 135)
    centre = mni.affine[:3, :3] @ (np.array(mni.shape) - 1) / 2 + mni.affine[:3, 3]
    affine = np.eye(4)
    affine[:3, :3] = linear
    affine[:3, 3] = centre - linear @ (np.array(shape) - 1) / 2
    data = resample_to(voxel_data(mni), mni.affine, affine, shape, order=1)
    img = nib.Nifti1Image(data.astype(np.float32), affine)
    assert orientation(affine) == ("L", "P", "S")
    out = _run(img)
    for name in ("labels.nii.gz", "prob_gm.nii.gz", "brain_mask.nii.gz"):
        result = load_nifti(out.artifacts[name])
        assert result.shape == shape
        np.testing.assert_allclose(result.affine, affine, atol=1e-6)
    labels = np.asarray(_labels(out).dataobj)
    gm = resample_to(gm_ref, mni.affine, affine, shape, order=1) > 0.5
    wm = resample_to(wm_ref, mni.affine, affine, shape, order=1) > 0.5
    assert dice(labels == 2, gm) >= 0.88
    assert dice(labels == 3, wm) >= 0.93


def test_skull_and_scalp_are_removed(mni, reference):
    """An unstripped head (synthetic skull and scalp around the template's brain): the brain mask
    is extracted, and the segmentation stays good. At 2 mm to keep the test fast."""
    gm_ref, wm_ref = reference
    pad = 12
    head, truth = _skull_phantom(voxel_data(mni)[::2, ::2, ::2], voxel_mm=2.0, pad=pad)
    check = detect_skull_stripped(head, (2.0, 2.0, 2.0))
    assert not check.skull_stripped
    result = segment(head, (2.0, 2.0, 2.0))
    assert not result.brain.skull_stripped
    assert dice(result.brain.mask, truth) >= 0.94
    labels = result.labels[pad:-pad, pad:-pad, pad:-pad]
    assert dice(labels == 2, gm_ref[::2, ::2, ::2] > 0.5) >= 0.90
    assert dice(labels == 3, wm_ref[::2, ::2, ::2] > 0.5) >= 0.93
