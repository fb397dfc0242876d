"""voxelpipe.volume: canonical orientation, axis codes, first volume, float32 voxel data."""

from __future__ import annotations

import itertools
import math

import nibabel as nib
import numpy as np
import pytest

from infra.local.samples import mni152_t1_path
from tests.fixtures.bad_nifti import make_good_image
from voxelpipe.nifti import load_nifti, to_nifti_bytes
from voxelpipe.pipeline.prepare import canonical_volume
from voxelpipe.volume import (
    canonical,
    first_volume,
    handedness,
    obliquity_deg,
    orientation,
    voxel_data,
    voxel_sizes,
    with_fresh_header,
    without_64bit_integers,
)

MNI_T1 = mni152_t1_path()


def _image(data: np.ndarray, affine: np.ndarray) -> nib.Nifti1Image:
    return nib.Nifti1Image(data, affine)


def _lps_image() -> nib.Nifti1Image:
    # x grows to the patient's left, y posterior, z superior: DICOM's LPS order, anisotropic voxels.
    affine = np.array(
        [[-0.9, 0, 0, 50.0], [0, -1.2, 0, 60.0], [0, 0, 2.5, -30.0], [0, 0, 0, 1]],
    )
    data = np.random.default_rng(0).random((6, 7, 8), dtype=np.float32)
    return _image(data, affine)


def _permuted_image() -> nib.Nifti1Image:
    # Voxel axis 0 runs inferior (I), axis 1 right (R), axis 2 posterior (P): an "IRP" image.
    affine = np.array(
        [[0, 1.0, 0, -10.0], [0, 0, -2.0, 40.0], [-3.0, 0, 0, 25.0], [0, 0, 0, 1]],
    )
    data = np.arange(5 * 6 * 7, dtype=np.int16).reshape(5, 6, 7)
    return _image(data, affine)


def _world_to_voxel(img: nib.Nifti1Image, world: np.ndarray) -> tuple[int, ...]:
    ijk = np.linalg.inv(img.affine) @ np.append(world, 1.0)
    rounded = np.rint(ijk[:3])
    assert np.allclose(ijk[:3], rounded, atol=1e-6)
    return tuple(int(v) for v in rounded)


@pytest.mark.parametrize(
    ("make", "codes"), [(_lps_image, ("L", "P", "S")), (_permuted_image, ("I", "R", "P"))]
)
def test_canonical_is_ras_and_keeps_world_coordinates(make, codes):
    img = make()
    assert orientation(img.affine) == codes
    can = canonical(img)
    assert orientation(can.affine) == ("R", "A", "S")
    assert np.linalg.det(can.affine[:3, :3]) > 0
    original = np.asarray(img.dataobj)
    reordered = np.asarray(can.dataobj)
    # Every voxel sits at the same world coordinate with the same value.
    for ijk in itertools.product(*(range(n) for n in img.shape)):
        world = (img.affine @ np.array([*ijk, 1.0]))[:3]
        assert reordered[_world_to_voxel(can, world)] == original[ijk]


def test_canonical_permutes_voxel_sizes_with_the_axes():
    can = canonical(_permuted_image())
    assert can.shape == (6, 7, 5)
    assert np.allclose(voxel_sizes(can.affine), [1.0, 2.0, 3.0])


def test_canonical_returns_a_ras_image_unchanged():
    img = nib.load(MNI_T1)
    assert canonical(img) is img
    assert orientation(img.affine) == ("R", "A", "S")


def test_orientation_rejects_a_singular_affine():
    with pytest.raises(ValueError, match="orientation"):
        orientation(np.diag([1.0, 0.0, 1.0, 1.0]))


@pytest.mark.parametrize(
    ("codes", "sign"),
    [(("R", "A", "S"), 1), (("L", "P", "S"), 1), (("L", "A", "S"), -1), (("A", "R", "S"), -1)],
)
def test_handedness_matches_the_affine_determinant(codes, sign):
    assert handedness(codes) == sign
    ornt = nib.orientations.axcodes2ornt(codes)
    affine = nib.orientations.inv_ornt_aff(ornt, (4, 4, 4))
    # inv_ornt_aff maps the reoriented grid back; its determinant sign is the codes' handedness.
    assert np.sign(np.linalg.det(affine[:3, :3])) == sign


def test_obliquity_and_voxel_sizes_of_a_rotated_affine():
    angle = math.radians(10)
    rotation = np.array(
        [[math.cos(angle), -math.sin(angle), 0], [math.sin(angle), math.cos(angle), 0], [0, 0, 1]]
    )
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag([2.0, 3.0, 4.0])
    assert np.allclose(voxel_sizes(affine), [2.0, 3.0, 4.0])
    assert np.allclose(obliquity_deg(affine), [10.0, 10.0, 0.0], atol=1e-6)
    assert np.allclose(obliquity_deg(np.diag([-1.0, 2.0, 3.0, 1.0])), 0.0)


@pytest.mark.parametrize("trailing", [(1,), (1, 1), (3,)])
def test_first_volume_gives_3d(trailing):
    data = np.random.default_rng(1).random((4, 5, 6, *trailing), dtype=np.float32)
    img = _image(data, np.diag([2.0, 2.0, 2.0, 1.0]))
    volume = first_volume(img)
    assert volume.shape == (4, 5, 6)
    assert np.array_equal(np.asarray(volume.dataobj), data[(..., *([0] * len(trailing)))])
    assert np.array_equal(volume.affine, img.affine)
    assert volume.header.get_zooms() == (2.0, 2.0, 2.0)


def test_first_volume_leaves_3d_alone_and_rejects_2d():
    img = _lps_image()
    assert first_volume(img) is img
    with pytest.raises(ValueError, match="3-D"):
        first_volume(_image(np.zeros((4, 5), dtype=np.float32), np.eye(4)))


def test_voxel_data_is_float32_with_scaling_applied(tmp_path):
    raw = np.arange(24, dtype=np.int16).reshape(2, 3, 4)
    img = _image(raw, np.eye(4))
    img.header.set_slope_inter(2.0, 10.0)
    path = tmp_path / "scaled.nii.gz"
    nib.save(img, path)
    data = voxel_data(nib.load(path))
    assert data.dtype == np.float32
    assert np.array_equal(data, raw.astype(np.float32) * 2 + 10)


def test_voxel_data_of_the_mni_t1():
    img = nib.load(MNI_T1)
    data = voxel_data(img)
    assert data.dtype == np.float32
    assert data.shape == (197, 233, 189)
    assert float(data.min()) == 0.0
    assert float(data.max()) == 255.0


@pytest.mark.parametrize("nifti2", [False, True])
def test_a_fresh_header_leaves_the_uploads_free_text_behind(nifti2: bool) -> None:
    """What Prepare writes (volume.with_fresh_header) carries none of an upload's free text."""
    img = make_good_image(nifti2=nifti2)
    img.header["descrip"] = b"Doe^Jane 1970-01-31 MRN123"
    img.header["aux_file"] = b"Doe.lut"
    img.header["intent_name"] = b"Doe"
    img.header.extensions.append(nib.nifti1.Nifti1Extension("comment", b"patient Doe, MRN 123"))
    img = load_nifti(to_nifti_bytes(img, compress=False))  # as an upload arrives: a proxy image
    assert len(img.header.extensions) == 1
    fresh = with_fresh_header(img)
    written = to_nifti_bytes(fresh, compress=False)
    assert b"doe" not in written.lower()
    reloaded = load_nifti(written)
    assert len(reloaded.header.extensions) == 0
    np.testing.assert_array_equal(reloaded.get_fdata(), img.get_fdata())
    np.testing.assert_allclose(reloaded.affine, img.affine)


@pytest.mark.parametrize(
    ("code", "units"), [(2 | 8, ("mm", "sec")), (3, ("micron", "unknown")), (255, ("unknown", "unknown"))]
)
def test_a_fresh_header_keeps_the_units_and_takes_undefined_codes_as_unknown(
    code: int, units: tuple[str, str]
) -> None:
    # xyzt_units 255 holds no defined unit (nibabel's get_xyzt_units raises KeyError for it).
    img = make_good_image()
    img.header["xyzt_units"] = code
    fresh = with_fresh_header(load_nifti(to_nifti_bytes(img, compress=False)))
    assert fresh.header.get_xyzt_units() == units


# --- the fresh header Prepare writes -------------------------------------------------------------


def _loaded(
    data: np.ndarray, affine: np.ndarray, slope: float | None = None, inter: float = 0.0
) -> nib.Nifti1Image:
    """`data` written as a NIfTI (with scl_slope/scl_inter when given) and read back as Prepare does."""
    img = nib.Nifti1Image(data, affine, dtype=data.dtype)
    if slope is not None:
        img.header.set_slope_inter(slope, inter)
    loaded: nib.Nifti1Image = load_nifti(to_nifti_bytes(img, compress=True))
    return loaded


@pytest.mark.parametrize(
    ("dtype", "values", "narrowed"),
    [
        (np.int64, [-5, 0, 2**31 - 1], np.int32),
        (np.uint64, [0, 7, 2**31 - 1], np.int32),
        (np.int64, [-(2**31) - 1, 0, 5], np.float64),
        (np.uint64, [0, 2**32, 2**64 - 1], np.float64),
        (np.int64, [2**53 + 1, 0, 1], np.float64),  # beyond 2**53: rounded to the nearest float64
        (np.int16, [-5, 0, 7], np.int16),  # not 64-bit: left alone
    ],
)
def test_64bit_integers_are_narrowed_to_what_nibabel_writes(dtype, values, narrowed) -> None:
    data = np.zeros((4, 3, 2), dtype=dtype)
    data.flat[: len(values)] = values
    assert without_64bit_integers(data).dtype == narrowed
    fresh = with_fresh_header(_loaded(data, np.eye(4)))
    assert fresh.get_data_dtype() == narrowed
    back = load_nifti(to_nifti_bytes(fresh, compress=False))  # nibabel writes it
    stored = np.asanyarray(back.dataobj)
    assert stored.dtype == narrowed
    # Exact where the type holds the value; the nearest float64 beyond 2**53.
    np.testing.assert_array_equal(stored, data.astype(narrowed))
    assert [int(v) for v in stored.flat[: len(values)]] == [
        int(float(v)) if narrowed == np.float64 else v for v in values
    ]


@pytest.mark.parametrize("affine", [np.eye(4), np.diag([-1.0, -1.0, 1.0, 1.0])], ids=["RAS", "LPS"])
@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.int64, np.float64])
def test_scaled_voxels_become_float32_in_ras_and_after_reordering(affine, dtype) -> None:
    # A loaded image keeps its scaling on the data object (its header's is reset): the canonical
    # volume must still be the scaled values, in float32, whatever the voxel order.
    data = np.arange(4 * 3 * 2, dtype=dtype).reshape(4, 3, 2)
    original = _loaded(data, affine, slope=0.5, inter=-10.0)
    volume = canonical_volume(original)
    assert volume.get_data_dtype() == np.float32
    assert orientation(volume.affine) == ("R", "A", "S")
    expected = nib.as_closest_canonical(nib.Nifti1Image(data.astype(np.float64) * 0.5 - 10.0, affine))
    np.testing.assert_array_equal(np.asanyarray(volume.dataobj), expected.get_fdata(dtype=np.float32))
    np.testing.assert_array_equal(volume.affine, expected.affine)
    assert volume.header.get_sform(coded=True)[1] == volume.header.get_qform(coded=True)[1] == 1


def test_unscaled_voxels_keep_their_type() -> None:
    for dtype in (np.uint8, np.int16, np.int32, np.float32, np.float64):
        data = np.arange(24, dtype=dtype).reshape(4, 3, 2)
        assert canonical_volume(_loaded(data, np.diag([-1.0, 1.0, 1.0, 1.0]))).get_data_dtype() == dtype
