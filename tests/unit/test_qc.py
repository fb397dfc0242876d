"""The qc analysis on nilearn's MNI152 T1 and on synthetic phantoms with known geometry and noise."""

from __future__ import annotations

import io
import json

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from infra.local.samples import mni152_t1_path
from voxelpipe.analyses.catalogue import AnalysisInput, AnalysisOutput
from voxelpipe.analyses.qc import (
    PREVIEWS,
    QC,
    QCParameters,
    canonical_voxels,
    find_foreground,
    foreground_intensity,
    foreground_measures,
    header_measures,
    intensity_measures,
    noise_measures,
    otsu_threshold,
    preview_images,
    value_percentiles,
)
from voxelpipe.volume import orientation
from voxelpipe.wiring import Runtime

MNI_T1 = mni152_t1_path()

# Relative error allowed on the SNR of a phantom whose true SNR is signal / sigma. The estimator is
# within ~1% of the truth from SNR 5 up (sigma from the air is unbiased; see the low-SNR test).
SNR_TOLERANCE = 0.05


def _run(img: nib.Nifti1Image, **parameters) -> AnalysisOutput:
    return QC.run(
        AnalysisInput(image=img, original_orientation=orientation(img.affine), parameters=parameters)
    )


def _png(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    assert image.format == "PNG"
    assert image.mode == "L"
    return image


def _ball(shape: tuple[int, ...], radius: float, centre: tuple[float, ...] | None = None) -> np.ndarray:
    centre = centre or tuple((n - 1) / 2 for n in shape)
    grids = np.ogrid[tuple(slice(0, n) for n in shape)]
    return sum((g - c) ** 2 for g, c in zip(grids, centre, strict=True)) <= radius**2


def _phantom(
    signal: float, sigma: float, noise: str, shape=(96, 96, 64), radius=20.0, seed=0
) -> nib.Nifti1Image:
    """A uniform ball of `signal` in a zero background, with Gaussian or Rician (magnitude) noise."""
    rng = np.random.default_rng(seed)
    truth = np.where(_ball(shape, radius), signal, 0.0)
    if noise == "gaussian":
        data = truth + rng.normal(0, sigma, shape)
    else:
        # Magnitude of a complex signal with Gaussian noise in both channels: Rician, Rayleigh in air.
        data = np.hypot(truth + rng.normal(0, sigma, shape), rng.normal(0, sigma, shape))
    return nib.Nifti1Image(data.astype(np.float32), np.eye(4))


@pytest.fixture(scope="module")
def mni() -> AnalysisOutput:
    return _run(nib.load(MNI_T1))


def test_catalogue_entry():
    assert QC.name == "qc"
    assert QC.version == "1.0.0"
    assert QC.runtime is Runtime.LAMBDA
    assert QC.outputs == PREVIEWS == ("preview_axial.png", "preview_coronal.png", "preview_sagittal.png")
    described = json.loads(json.dumps(QC.describe()))
    assert described["parameters"]["percentiles"] == [1, 5, 50, 95, 99]


def test_mni_header_and_intensity(mni):
    header = mni.measures["header"]
    assert header["dimensions"] == [197, 233, 189]
    assert header["voxel_size_mm"] == [1.0, 1.0, 1.0]
    assert header["field_of_view_mm"] == [197.0, 233.0, 189.0]
    assert header["orientation_original"] == header["orientation_canonical"] == "RAS"
    assert header["determinant_sign"] == 1
    assert header["oblique"] is False
    assert header["datatype"] == "uint8"
    intensity = mni.measures["intensity"]
    assert intensity["min"] == 0.0
    assert intensity["max"] == 255.0
    assert intensity["zero_fraction"] == pytest.approx(0.7825, abs=1e-3)
    assert list(intensity["percentiles"]) == ["p1", "p5", "p50", "p95", "p99"]


def test_mni_foreground_snr_and_cnr(mni):
    foreground = mni.measures["foreground"]
    # The template is brain-extracted: the mask is the brain, about 1.5-2 L, near the centre.
    assert 1500 < foreground["volume_ml"] < 2100
    assert foreground["fraction"] == pytest.approx(
        foreground["volume_ml"] * 1000 / (197 * 233 * 189), abs=1e-5
    )
    assert np.allclose(foreground["centre_voxel"], [98, 116, 80], atol=10)
    # The background is exactly zero, so noise is unmeasurable: null with a note, not inf.
    assert mni.measures["snr"] is None
    assert mni.measures["noise"]["sigma"] is None
    assert "zero-filled" in mni.measures["noise"]["note"]
    # CNR between the lower (GM-like) and upper (WM-like) tissue modes is still finite.
    contrast = mni.measures["contrast"]
    assert contrast["low_mean"] < contrast["high_mean"]
    assert 1.0 < mni.measures["cnr"] < 4.0


def test_mni_measures_are_plain_json(mni):
    text = json.dumps(mni.measures, allow_nan=False)
    assert json.loads(text) == mni.measures


def _assert_plain(value) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            assert type(key) is str
            _assert_plain(item)
    elif isinstance(value, list):
        for item in value:
            _assert_plain(item)
    else:
        assert value is None or type(value) in (bool, int, float, str), (value, type(value))


def test_mni_measures_hold_no_numpy_scalars(mni):
    _assert_plain(mni.measures)


def test_mni_previews(mni, tmp_path):
    assert set(mni.artifacts) == set(PREVIEWS)
    sizes = {name: _png(data).size for name, data in mni.artifacts.items()}
    assert sizes == {
        "preview_axial.png": (197, 233),
        "preview_coronal.png": (197, 189),
        "preview_sagittal.png": (233, 189),
    }
    axial = np.asarray(_png(mni.artifacts["preview_axial.png"]))
    # Windowed to the brain: the background is black and the brain spans the grey range.
    assert axial[0, 0] == 0
    assert axial.max() == 255


def test_mni_in_lps_storage_gives_the_same_measures_and_previews(mni):
    img = nib.load(MNI_T1)
    data = np.asarray(img.dataobj)[::-1, ::-1, :]
    flip = np.diag([-1.0, -1.0, 1.0, 1.0])
    flip[:3, 3] = [img.shape[0] - 1, img.shape[1] - 1, 0]
    lps = nib.Nifti1Image(data, img.affine @ flip)
    out = _run(lps)
    assert out.measures["header"]["orientation_original"] == "LPS"
    assert out.measures["header"]["determinant_sign_original"] == 1
    for key in ("intensity", "foreground", "contrast", "preview"):
        assert out.measures[key] == mni.measures[key]
    assert out.artifacts == mni.artifacts


def test_anisotropic_permuted_image_geometry_and_preview_sizes():
    # Stored as (S, R, A) with 3.0, 1.0, 1.5 mm voxels; canonical is 40 x 50 x 20 at 1.0, 1.5, 3.0.
    ras = _phantom(100.0, 5.0, "rician", shape=(40, 50, 20), radius=8.0, seed=3).get_fdata(dtype=np.float32)
    stored = np.ascontiguousarray(ras.transpose(2, 0, 1))
    affine = np.array([[0, 1.0, 0, -20.0], [0, 0, 1.5, -37.0], [3.0, 0, 0, -30.0], [0, 0, 0, 1]])
    img = nib.Nifti1Image(stored, affine)
    out = _run(img)
    header = out.measures["header"]
    assert header["orientation_original"] == "SRA"
    assert header["orientation_canonical"] == "RAS"
    assert header["determinant_sign_original"] == 1
    assert header["dimensions"] == [40, 50, 20]
    assert header["voxel_size_mm"] == [1.0, 1.5, 3.0]
    assert header["field_of_view_mm"] == [40.0, 75.0, 60.0]
    assert header["voxel_volume_mm3"] == 4.5
    assert header["datatype"] == "float32"
    # One mm per pixel (the finest voxel) for all three views: sizes follow the field of view.
    sizes = {name: _png(data).size for name, data in out.artifacts.items()}
    assert sizes == {
        "preview_axial.png": (40, 75),
        "preview_coronal.png": (40, 60),
        "preview_sagittal.png": (75, 60),
    }
    assert out.measures["preview"]["mm_per_pixel"] == 1.0
    json.dumps(out.measures, allow_nan=False)


def test_preview_max_px_shrinks_all_views_alike():
    img = nib.Nifti1Image(
        _phantom(100.0, 5.0, "rician", shape=(40, 50, 20), radius=8.0).get_fdata(dtype=np.float32),
        np.diag([1.0, 1.5, 3.0, 1.0]),
    )
    out = _run(img, preview_max_px=30)
    sizes = {name: _png(data).size for name, data in out.artifacts.items()}
    # The longest extent, 75 mm, becomes 30 px: 2.5 mm per pixel everywhere.
    assert sizes == {
        "preview_axial.png": (16, 30),
        "preview_coronal.png": (16, 24),
        "preview_sagittal.png": (30, 24),
    }
    assert out.measures["preview"]["mm_per_pixel"] == 2.5


@pytest.mark.parametrize("noise", ["rician", "gaussian"])
@pytest.mark.parametrize("true_snr", [5.0, 20.0, 50.0])
def test_snr_of_a_noisy_phantom(noise, true_snr):
    sigma = 4.0
    measures = _run(_phantom(true_snr * sigma, sigma, noise)).measures
    assert measures["noise"]["model"] == ("rayleigh" if noise == "rician" else "gaussian")
    assert measures["noise"]["sigma"] == pytest.approx(sigma, rel=SNR_TOLERANCE)
    assert measures["snr"] == pytest.approx(true_snr, rel=SNR_TOLERANCE)
    # The foreground is the ball: 4/3 pi 20^3 mm^3 = 33.5 mL.
    assert measures["foreground"]["volume_ml"] == pytest.approx(33.5, rel=0.03)
    json.dumps(measures, allow_nan=False)


@pytest.mark.parametrize(("noise", "tolerance"), [("gaussian", SNR_TOLERANCE), ("rician", 0.15)])
def test_snr_of_a_very_noisy_phantom(noise, tolerance):
    # At SNR 2 the mask still finds the ball (it is thresholded after smoothing) and sigma is still
    # right; a magnitude image's foreground mean is Rician-biased upwards (about 2.25 sigma for a
    # true 2 sigma), so its SNR reads ~12% high.
    measures = _run(_phantom(8.0, 4.0, noise)).measures
    assert measures["noise"]["sigma"] == pytest.approx(4.0, rel=SNR_TOLERANCE)
    assert measures["snr"] == pytest.approx(2.0, rel=tolerance)
    assert measures["foreground"]["volume_ml"] == pytest.approx(33.5, rel=0.03)


def test_cnr_of_a_two_compartment_phantom():
    # An inner ball of 150 in a shell of 100, Gaussian noise sigma 5 everywhere. MRIQC-style
    # CNR = |150 - 100| / sqrt(sd_lo^2 + sd_hi^2 + sigma^2) = 50 / sqrt(3 * 25).
    shape, sigma = (96, 96, 64), 5.0
    rng = np.random.default_rng(7)
    truth = np.where(_ball(shape, 24.0), 100.0, 0.0)
    truth[_ball(shape, 14.0)] = 150.0
    img = nib.Nifti1Image((truth + rng.normal(0, sigma, shape)).astype(np.float32), np.eye(4))
    out = _run(img)
    assert out.measures["snr"] is not None
    assert out.measures["contrast"]["low_mean"] == pytest.approx(100.0, rel=0.02)
    assert out.measures["contrast"]["high_mean"] == pytest.approx(150.0, rel=0.02)
    assert out.measures["cnr"] == pytest.approx(50 / np.sqrt(75), rel=0.1)


@pytest.mark.parametrize(("convention", "right_on_left"), [("radiological", True), ("neurological", False)])
def test_display_conventions(convention, right_on_left):
    # A dim ball with three bright bars through the central planes, at the patient's right (high i
    # in RAS), anterior (high j) and superior (high k); the mask centre is the ball's, voxel 32.
    shape = (64, 64, 64)
    data = np.where(_ball(shape, 24.0), 100.0, 0.0)
    mid = slice(28, 37)
    data[46:55, mid, mid] = 300.0  # right
    data[mid, 46:55, mid] = 300.0  # anterior
    data[mid, mid, 46:55] = 300.0  # superior
    data += np.random.default_rng(2).normal(0, 2.0, shape)
    out = _run(nib.Nifti1Image(data.astype(np.float32), np.eye(4)), display_convention=convention)
    assert out.measures["preview"]["convention"] == convention
    assert out.measures["preview"]["slice_voxel"] == [32, 32, 32]

    def bright(name: str) -> tuple[float, float]:
        rows, cols = np.nonzero(np.asarray(_png(out.artifacts[name])) >= 128)
        return float(rows.mean()), float(cols.mean())

    centre = 31.5
    row, col = bright("preview_axial.png")  # right and anterior bars
    assert row < centre  # anterior at the top
    assert (col < centre) == right_on_left
    row, col = bright("preview_coronal.png")  # right and superior bars
    assert row < centre  # superior at the top
    assert (col < centre) == right_on_left
    row, col = bright("preview_sagittal.png")  # anterior and superior bars
    assert row < centre  # superior at the top
    assert col < centre  # anterior on the left, whatever the convention


def test_parameters_are_applied_and_checked():
    img = _phantom(100.0, 5.0, "rician", shape=(48, 48, 32), radius=10.0)
    out = _run(img, percentiles=[10, 90])
    assert list(out.measures["intensity"]["percentiles"]) == ["p10", "p90"]
    assert list(out.measures["foreground"]["intensity"]["percentiles"]) == ["p10", "p90"]
    with pytest.raises(ValueError, match="unknown qc parameters: colour"):
        _run(img, colour="red")
    with pytest.raises(ValueError, match="percentiles"):
        _run(img, percentiles=[150])
    with pytest.raises(ValueError, match="display_convention"):
        _run(img, display_convention="upside-down")
    with pytest.raises(ValueError, match="preview_max_px"):
        _run(img, preview_max_px=2.5)


def test_constant_image_has_no_foreground_but_valid_output():
    img = nib.Nifti1Image(np.full((20, 20, 20), 7.0, dtype=np.float32), np.eye(4))
    out = _run(img)
    assert out.measures["foreground"]["fraction"] == 0.0
    assert out.measures["snr"] is None and out.measures["cnr"] is None
    assert "image is constant: no foreground" in out.measures["warnings"]
    json.dumps(out.measures, allow_nan=False)
    assert all(_png(data).size == (20, 20) for data in out.artifacts.values())


def test_non_finite_voxels_are_reported_not_propagated():
    data = _phantom(100.0, 5.0, "rician", shape=(48, 48, 32), radius=10.0).get_fdata(dtype=np.float32)
    data[0, 0, 0] = np.nan
    data[1, 0, 0] = np.inf
    out = _run(nib.Nifti1Image(data, np.eye(4)))
    assert out.measures["intensity"]["nonfinite_fraction"] == round(2 / data.size, 5)
    assert any("non-finite" in w for w in out.measures["warnings"])
    json.dumps(out.measures, allow_nan=False)


def test_oblique_and_4d_single_volume_input():
    data = _phantom(100.0, 5.0, "rician", shape=(48, 48, 32), radius=10.0).get_fdata(dtype=np.float32)
    angle = np.radians(15)
    affine = np.eye(4)
    affine[:3, :3] = [[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]]
    out = _run(nib.Nifti1Image(data[..., None], affine))
    header = out.measures["header"]
    assert header["dimensions"] == [48, 48, 32]
    assert header["volumes"] == 1
    assert header["oblique"] is True
    assert max(header["obliquity_deg"]) == pytest.approx(15.0, abs=0.01)
    assert any("oblique" in w for w in out.measures["warnings"])


def test_otsu_threshold_splits_two_modes():
    values = np.concatenate([np.full(1000, 10.0), np.full(300, 50.0)])
    hist, edges = np.histogram(values, bins=64, range=(0, 64))
    threshold = otsu_threshold(hist, edges)
    assert 10 < threshold <= 50
    assert otsu_threshold(np.array([5, 0, 0]), np.array([0.0, 1.0, 2.0, 3.0])) == 3.0


# --- any finite float32 volume: extreme magnitudes and ranges ---------------------------------------


def _integer_phantom(offset: float = 0.0) -> np.ndarray:
    """The noisy ball with integer values (so that power-of-two scalings of it are exact)."""
    return np.rint(_phantom(200.0, 10.0, "gaussian", shape=(48, 48, 32), radius=10.0).get_fdata() + offset)


@pytest.mark.parametrize("exponent", [-149 + 16, -140, -60, 60, 100], ids=lambda e: f"2**{e}")
def test_measures_scale_with_the_volume_at_any_magnitude(exponent):
    # Scaled by a power of two (exact in float32, subnormal values included), a volume must give
    # the same mask, the same SNR and CNR, and statistics scaled by the same factor.
    values = _integer_phantom()
    reference = _run(nib.Nifti1Image(values.astype(np.float32), np.eye(4))).measures
    scaled = np.ldexp(values, exponent).astype(np.float32)
    np.testing.assert_array_equal(np.ldexp(scaled.astype(np.float64), -exponent), values)  # exact
    measures = _run(nib.Nifti1Image(scaled, np.eye(4))).measures
    json.dumps(measures, allow_nan=False)
    for key in ("fraction", "volume_ml", "centre_voxel"):
        assert measures["foreground"][key] == reference["foreground"][key]
    assert measures["snr"] == pytest.approx(reference["snr"], rel=1e-4)
    assert measures["cnr"] == pytest.approx(reference["cnr"], rel=1e-4)
    factor = 2.0**exponent
    assert measures["foreground"]["threshold"] == pytest.approx(
        reference["foreground"]["threshold"] * factor, rel=1e-5
    )
    assert measures["noise"]["sigma"] == pytest.approx(reference["noise"]["sigma"] * factor, rel=1e-5)
    assert measures["intensity"]["percentiles"]["p50"] == pytest.approx(
        reference["intensity"]["percentiles"]["p50"] * factor, rel=1e-5
    )
    # (measures keep 6 significant digits)
    assert measures["preview"]["window"] == pytest.approx(
        [w * factor for w in reference["preview"]["window"]], rel=1e-5
    )


def test_values_spanning_float32s_range_give_finite_measures():
    # +-3.3e38: max - min, sums and the smoothing all overflow float32.
    values = _integer_phantom(offset=-100.0)  # signed values
    top = float(np.abs(values).max())
    data = (values / top * 3.3e38).astype(np.float32)
    measures = _run(nib.Nifti1Image(data, np.eye(4))).measures
    json.dumps(measures, allow_nan=False)
    low, high = measures["intensity"]["min"], measures["intensity"]["max"]
    assert low < -1e38 < 1e38 < high and max(-low, high) == pytest.approx(3.3e38, rel=1e-5)
    reference = _run(nib.Nifti1Image(values.astype(np.float32), np.eye(4))).measures
    assert measures["foreground"]["volume_ml"] == pytest.approx(
        reference["foreground"]["volume_ml"], rel=0.01
    )
    assert measures["snr"] == pytest.approx(reference["snr"], rel=0.01)


def test_percentiles_match_numpy_and_stay_finite_near_float32s_limit():
    values = np.random.default_rng(4).normal(100, 20, 10_001).astype(np.float32)
    qs = [0, 1, 2.5, 50, 97.5, 99, 100]
    np.testing.assert_allclose(
        value_percentiles(values, qs), np.percentile(values.astype(np.float64), qs), rtol=1e-12
    )
    extreme = np.array([-3.4e38, 3.4e38, 0.0], dtype=np.float32)
    assert np.isfinite(value_percentiles(extreme, [25, 50, 75])).all()


# --- the phases, one at a time -------------------------------------------------------------------


def test_phases_of_a_phantom():
    img = _phantom(100.0, 5.0, "gaussian", shape=(48, 48, 32), radius=10.0)
    warnings: list[str] = []
    canonical_img, data, volumes, nonfinite = canonical_voxels(img, warnings)
    assert (volumes, nonfinite, warnings) == (1, 0, [])
    header = header_measures(canonical_img, img, ("R", "A", "S"), volumes, warnings)
    assert header["dimensions"] == [48, 48, 32] and header["datatype"] == "float32"
    value_range = (float(data.min()), float(data.max()))
    intensity = intensity_measures(data, value_range, (50.0,), nonfinite)
    assert intensity["min"] == pytest.approx(value_range[0], rel=1e-6)
    fg = find_foreground(data, value_range, warnings)
    assert fg.count == int(fg.mask.sum())
    assert np.allclose(fg.centre(), (23.5, 23.5, 15.5), atol=1)
    zooms = np.ones(3)
    measures = foreground_measures(fg, zooms)
    assert measures["volume_ml"] == pytest.approx(4.19, rel=0.05)  # 4/3 pi 10^3 mm^3
    fg_intensity, fg_mean, window = foreground_intensity(data[fg.mask], (50.0,))
    assert fg_intensity["mean"] == pytest.approx(fg_mean, rel=1e-5) and fg_mean == pytest.approx(
        100.0, rel=0.05
    )
    assert window[0] < fg_mean < window[1]
    noise, snr = noise_measures(data, fg, zooms, 10.0, fg_mean)
    assert noise["model"] == "gaussian" and snr == pytest.approx(20.0, rel=SNR_TOLERANCE)
    params = QCParameters.from_mapping({})
    preview, artifacts = preview_images(data, fg.centre(), window, zooms, params)
    assert set(artifacts) == set(PREVIEWS) and preview["slice_voxel"] == list(fg.centre())


def test_find_foreground_of_a_constant_or_tiny_range_volume():
    warnings: list[str] = []
    constant = np.full((10, 10, 10), 3.0, dtype=np.float32)
    assert find_foreground(constant, (3.0, 3.0), warnings).count == 0
    assert warnings == ["image is constant: no foreground"]
    # A ball one subnormal step above a background of zeros: the whole range is 1.4e-45.
    tiny = np.where(_ball((20, 20, 20), 6.0), np.float32(1e-45), np.float32(0.0)).astype(np.float32)
    fg = find_foreground(tiny, (0.0, float(tiny.max())), [])
    assert 0 < fg.count < tiny.size and fg.mask[10, 10, 10] and not fg.mask[0, 0, 0]
