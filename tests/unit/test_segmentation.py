"""The building blocks of tissue-seg (morphology, resampling, bias field, EM, brain mask) on small
phantoms with known answers. The whole analysis on the MNI152 T1 and its degraded versions is in
tests/integration/test_segmentation_mni.py."""

from __future__ import annotations

import math

import nibabel as nib
import numpy as np
import pytest
import torch
from scipy import ndimage

from tests.fixtures.segmentation import ball, bias_field, dice, resample_to, three_tissue_phantom
from voxelpipe.analyses.tissue_seg import OUTPUTS, TISSUE_SEG, TissueSegParameters, segment_image
from voxelpipe.segmentation import (
    BiasParameters,
    EMParameters,
    axis_map,
    brain_mask,
    correct_bias,
    resample,
    segment,
    segment_tissues,
    to_grid,
)
from voxelpipe.segmentation import morphology as morph
from voxelpipe.wiring import Runtime


@pytest.mark.parametrize("backend", ["scipy", "torch"])
def test_components_and_holes_match_scipy(backend):
    rng = np.random.default_rng(1)
    mask = ndimage.gaussian_filter(rng.random((40, 36, 30)), 1.5) > 0.52
    labels = morph.label_components(torch.as_tensor(mask), backend).numpy()
    expected, count = ndimage.label(mask)  # 6-connectivity by default
    assert len(np.unique(labels[mask])) == count
    # Same partition: each of our labels maps to exactly one of scipy's.
    pairs = {(int(a), int(b)) for a, b in zip(labels[mask], expected[mask], strict=True)}
    assert len(pairs) == count
    largest = morph.largest_component(torch.as_tensor(mask), backend).numpy()
    sizes = np.bincount(expected.ravel())[1:]
    np.testing.assert_array_equal(largest, expected == 1 + int(np.argmax(sizes)))
    shell = ball((30, 30, 30), 12) & ~ball((30, 30, 30), 6)
    np.testing.assert_array_equal(
        morph.fill_holes(torch.as_tensor(shell), backend).numpy(), ndimage.binary_fill_holes(shell)
    )


def _blobs(seed: int, shape=(16, 14, 12), level: float = 0.53) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return ndimage.gaussian_filter(rng.random(shape), 1.2) > level


@pytest.mark.parametrize("seed", range(4))
def test_label_backends_agree(seed):
    """The CPU path (scipy) and the GPU path (torch propagation) give the same labels, largest
    component, fraction and filled holes, voxel for voxel."""
    mask = torch.as_tensor(_blobs(seed, level=0.5 + 0.01 * seed))
    for op in (morph.label_components, morph.largest_component, morph.fill_holes):
        np.testing.assert_array_equal(op(mask, "scipy").numpy(), op(mask, "torch").numpy())
    assert morph.component_fraction(mask, "scipy") == morph.component_fraction(mask, "torch")
    # Labels are 1 + the smallest flat index of each component, on both paths.
    labels = morph.label_components(mask, "scipy").numpy().ravel()
    for value in np.unique(labels[labels > 0]):
        assert np.flatnonzero(labels == value)[0] == value - 1


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA: the torch path on the GPU")
@pytest.mark.parametrize("seed", range(4))
def test_label_backends_agree_on_cuda(seed):
    """A CUDA tensor takes the torch path by default; it labels as scipy does on the CPU."""
    mask = _blobs(seed, shape=(40 + seed, 37, 31), level=0.5 + 0.01 * seed)
    on_cpu, on_gpu = torch.as_tensor(mask), torch.as_tensor(mask).cuda()
    for op in (morph.label_components, morph.largest_component, morph.fill_holes):
        np.testing.assert_array_equal(op(on_cpu, "scipy").numpy(), op(on_gpu).cpu().numpy())
    assert morph.component_fraction(on_cpu, "scipy") == morph.component_fraction(on_gpu)


def test_largest_component_ties_go_to_the_first_voxel():
    # Two 2x2x2 cubes and a 1-voxel speck; the cubes tie: the one holding the first voxel wins,
    # whichever order a backend numbers them in.
    mask = np.zeros((6, 6, 6), dtype=bool)
    mask[4:6, 0:2, 0:2] = True  # later in flat order...
    mask[0:2, 3:5, 3:5] = True  # ...than this one, which starts at index 0*36 + 3*6 + 3
    mask[0, 0, 0] = True
    expected = np.zeros_like(mask)
    expected[0:2, 3:5, 3:5] = True
    for backend in ("scipy", "torch"):
        chosen = morph.largest_component(torch.as_tensor(mask), backend).numpy()
        np.testing.assert_array_equal(chosen, expected)
        assert morph.component_fraction(torch.as_tensor(mask), backend) == 8 / 17


def test_label_backends_on_edge_cases():
    empty = torch.zeros((3, 4, 5), dtype=torch.bool)
    full = torch.ones((3, 4, 5), dtype=torch.bool)
    line = torch.zeros((1, 1, 7), dtype=torch.bool)
    line[0, 0, ::2] = True  # four single voxels, all tied
    for mask in (empty, full, line):
        for op in (morph.label_components, morph.largest_component, morph.fill_holes):
            np.testing.assert_array_equal(op(mask, "scipy").numpy(), op(mask, "torch").numpy())
    assert morph.largest_component(line).nonzero().tolist() == [[0, 0, 0]]
    # A mask whose every face is foreground: the enclosed background is a hole on both paths.
    box = torch.ones((5, 5, 5), dtype=torch.bool)
    box[1:4, 1:4, 1:4] = False
    assert bool(morph.fill_holes(box, "scipy").all()) and bool(morph.fill_holes(box, "torch").all())


def test_dilate_and_erode_are_ball_like():
    point = np.zeros((31, 31, 31), dtype=bool)
    point[15, 15, 15] = True
    grown = morph.dilate(torch.as_tensor(point), (6, 6, 6)).numpy()
    sphere = ball(point.shape, 6.0)
    offsets = np.abs(np.indices(point.shape) - 15)
    cube, octahedron = offsets.max(0) <= 6, offsets.sum(0) <= 6
    # Far closer to a ball than a cube or an octahedron of the same radius (~0.6 each).
    assert dice(grown, sphere) > 0.85 > 0.65 > max(dice(cube, sphere), dice(octahedron, sphere))
    eroded = morph.erode(torch.as_tensor(sphere), (3, 3, 3)).numpy()
    assert not (eroded & ~sphere).any() and dice(eroded, ball(point.shape, 3.0)) > 0.75


def test_axis_map_is_exact_for_reorientations():
    img = nib.Nifti1Image(
        np.random.default_rng(0).random((7, 8, 9)).astype(np.float32), np.diag([2, 1, 3, 1.0])
    )
    for codes in (("L", "P", "S"), ("P", "I", "R"), ("S", "L", "A")):
        ornt = nib.orientations.ornt_transform(
            nib.orientations.io_orientation(img.affine), nib.orientations.axcodes2ornt(codes)
        )
        other = img.as_reoriented(ornt)
        mapping = axis_map(img.affine, img.shape, other.affine, other.shape)
        assert mapping is not None
        np.testing.assert_array_equal(
            to_grid(np.asarray(img.dataobj), img.affine, other.affine, other.shape, "linear"),
            np.asarray(other.dataobj),
        )
    # Half a voxel off, or another voxel size: not a reordering.
    shifted = img.affine.copy()
    shifted[0, 3] += 1.0
    assert axis_map(img.affine, img.shape, shifted, img.shape) is None
    assert axis_map(img.affine, img.shape, img.affine @ np.diag([2, 1, 1, 1.0]), img.shape) is None


def test_resample_matches_scipy():
    rng = np.random.default_rng(2)
    data = ndimage.gaussian_filter(rng.random((30, 28, 26)), 2).astype(np.float32)
    src = np.diag([1.0, 1.0, 1.0, 1.0])
    a = math.radians(20)
    dst = np.eye(4)
    dst[:3, :3] = np.array([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1]]) * 0.8
    dst[:3, 3] = [6.0, 2.0, 3.0]
    shape = (20, 22, 24)
    ours = resample(data, src, dst, shape, "linear")
    theirs = resample_to(data, src, dst, shape, order=1)
    inside = resample_to(np.ones_like(data), src, dst, shape, order=0) > 0
    np.testing.assert_allclose(ours[inside], theirs[inside], atol=1e-5)
    labels = (data * 4).astype(np.uint8)
    nearest = resample(labels, src, dst, shape, "nearest")
    assert nearest.dtype == np.uint8
    agree = np.mean(nearest[inside] == resample_to(labels, src, dst, shape, order=0)[inside])
    assert agree > 0.99  # ties at exactly half a voxel may round either way
    stacked = resample(np.stack([data, 2 * data]), src, dst, shape, "linear")
    np.testing.assert_allclose(stacked[1], 2 * ours, rtol=1e-6)


def test_em_recovers_a_phantom():
    data, truth = three_tissue_phantom()
    rng = np.random.default_rng(3)
    noisy = (data + rng.normal(0, 12, data.shape)).astype(np.float32)
    mask = truth > 0
    result = segment_tissues(noisy, mask, (1.0, 1.0, 1.0))
    assert np.mean(result.labels[mask] == truth[mask]) > 0.99
    # Means come back in the input's units, darkest first, GM's two Gaussians both near 120.
    assert result.tissue_of == (0, 1, 1, 2)
    assert abs(result.means[0] - 40) < 5 and abs(result.means[-1] - 200) < 5


@pytest.mark.parametrize(
    ("shape", "spacing"),
    [((64, 64, 64), (1.0, 1.0, 1.0)), ((66, 60, 56), (1.0, 1.1, 1.3))],  # axes and voxel sizes apart
)
def test_n4_recovers_a_known_field(shape, spacing):
    data, truth = three_tissue_phantom(shape)
    mask = truth > 0
    field = bias_field(data.shape, mask, amplitude=2.0)  # ~0.75-1.3: spans ~45 %
    corrected, info = correct_bias(data * field, mask, spacing)
    assert info.applied and info.converged and info.span > 0.3
    assert info.library is not None and info.library.startswith("SimpleITK")
    assert info.field.shape == data.shape and info.field.dtype == np.float32
    ratio = (field / info.field)[mask]
    ratio /= np.exp(np.log(ratio).mean())
    # Fitted on the 4x shrunk phantom, evaluated at full resolution: within 5 % nearly everywhere
    # (the uncorrected field is off by up to 30 %).
    assert np.percentile(np.abs(np.log(ratio)), 99) < 0.05
    np.testing.assert_allclose(corrected[mask], (data * field / info.field)[mask], rtol=1e-5)
    labels = np.digitize(corrected, [80.0, 160.0]) + 1  # the phantom's thresholds: 40, 120, 200
    assert np.mean(labels[mask] == truth[mask]) > 0.99


def test_n4_leaves_a_flat_volume_flat():
    data, truth = three_tissue_phantom((64, 64, 64))
    corrected, info = correct_bias(data, truth > 0, (1.0, 1.0, 1.0))
    assert info.span < 0.02
    assert np.percentile(np.abs(corrected - data)[truth > 0], 99) < 0.02 * 200


def test_bias_modes():
    data, truth = three_tissue_phantom((48, 48, 48))
    mask = truth > 0
    biased = data * bias_field(data.shape, mask, amplitude=2.0)
    same, off = correct_bias(biased, mask, (1.0, 1.0, 1.0), mode="off")
    assert same is biased and not off.applied and off.method == "none" and np.all(off.field == 1)
    # "auto" leaves a field weaker than min_span alone, but reports it.
    kept, weak = correct_bias(biased, mask, (1.0, 1.0, 1.0), "auto", BiasParameters(min_span=5.0))
    assert kept is biased and not weak.applied and weak.span > 0.3
    with pytest.raises(ValueError, match="mode"):
        correct_bias(biased, mask, (1.0, 1.0, 1.0), mode="maybe")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        BiasParameters(levels=0)
    with pytest.raises(ValueError):
        BiasParameters(dark_cut=1.0)


def test_brain_mask_keeps_a_stripped_brain():
    data, truth = three_tissue_phantom()
    result = brain_mask(data, (2.0, 2.0, 2.0))  # 2 mm voxels: a brain-sized 460 mL
    assert result.skull_stripped and result.check is not None and result.check.skull_stripped
    np.testing.assert_array_equal(result.mask, truth > 0)


def test_a_stripped_input_is_labelled_once(monkeypatch):
    """The skull-stripped check's components are the mask's: one labelling, not one each."""
    data, _ = three_tissue_phantom()
    labelled = []
    largest_component = morph.largest_component

    def counted(*args, **kwargs):
        labelled.append(args[0].shape)
        return largest_component(*args, **kwargs)

    monkeypatch.setattr(morph, "largest_component", counted)
    result = brain_mask(data, (2.0, 2.0, 2.0))
    assert result.skull_stripped and result.check is not None and result.check.skull_stripped
    assert len(labelled) == 1


def test_parameters_are_validated():
    with pytest.raises(ValueError, match="unknown"):
        TissueSegParameters.from_mapping({"nope": 1})
    with pytest.raises(ValueError, match="bias_correction"):
        TissueSegParameters.from_mapping({"bias_correction": "maybe"})
    with pytest.raises(ValueError, match="mrf_beta"):
        TissueSegParameters.from_mapping({"mrf_beta": -1})
    with pytest.raises(ValueError):
        EMParameters(gaussians=(0, 1, 1))
    with pytest.raises(ValueError, match="no brain"):
        segment(np.zeros((20, 20, 20), np.float32), (1.0, 1.0, 1.0))
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            data, _ = three_tissue_phantom((24, 24, 24))
            phantom = nib.Nifti1Image(data, np.diag([2.0, 2.0, 2.0, 1.0]))
            segment_image(phantom, TissueSegParameters.from_mapping({"device": "cuda"}))


def test_catalogue_entry():
    assert TISSUE_SEG.name == "tissue-seg"
    assert TISSUE_SEG.version == "1.1.0"  # 1.1: N4 bias correction
    assert TISSUE_SEG.runtime is Runtime.LAMBDA
    assert set(TISSUE_SEG.outputs) == set(OUTPUTS)
    assert TISSUE_SEG.describe()["parameters"]["bias_correction"] == "auto"
