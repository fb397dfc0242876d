"""Small helpers for the volumes the analyses see: RAS+ orientation, 3-D data, float32 voxels.

This module is the typed boundary to nibabel: its functions that mypy sees as untyped are called
here only, so analyses stay `mypy --strict` clean without scattered ignores.
"""

from __future__ import annotations

from typing import Any, TypeAlias

import nibabel as nib
import numpy as np
import numpy.typing as npt
from nibabel import affines, orientations

from voxelpipe.nifti import xyzt_unit_names

Image: TypeAlias = nib.Nifti1Image | nib.Nifti2Image


def canonical(img: Image) -> Image:
    """`img` reordered/flipped so its voxel axes run closest to R, A, S (returned as is if already so).

    Only the voxel order and the affine change; every voxel keeps its world coordinate.
    """
    result: Image = nib.as_closest_canonical(img)  # type: ignore[no-untyped-call]
    return result


def orientation(affine: npt.ArrayLike) -> tuple[str, str, str]:
    """The axis codes ('R'/'L', 'A'/'P', 'S'/'I') that the voxel axes point towards."""
    codes = orientations.aff2axcodes(np.asarray(affine, dtype=np.float64))  # type: ignore[no-untyped-call]
    if len(codes) != 3 or any(code is None for code in codes):
        # aff2axcodes gives None for an axis with no direction (a degenerate, singular affine).
        raise ValueError(f"affine has no well-defined orientation: {codes}")
    return (str(codes[0]), str(codes[1]), str(codes[2]))


def handedness(codes: tuple[str, str, str]) -> int:
    """Sign of the affine determinant that axis codes imply: +1 for RAS-like, -1 for e.g. LAS."""
    ornt = orientations.axcodes2ornt(codes)  # type: ignore[no-untyped-call]
    matrix = np.zeros((3, 3))
    for voxel_axis, (world_axis, flip) in enumerate(ornt):
        matrix[int(world_axis), voxel_axis] = flip
    return 1 if np.linalg.det(matrix) > 0 else -1


def voxel_sizes(affine: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """Voxel edge lengths (mm) from the affine: the world spacing, whatever the header's pixdim says."""
    sizes: npt.NDArray[np.float64] = np.asarray(
        affines.voxel_sizes(np.asarray(affine, dtype=np.float64)),  # type: ignore[no-untyped-call]
        dtype=np.float64,
    )
    return sizes[:3]


def obliquity_deg(affine: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """Per world axis, the angle (degrees) to the nearest voxel axis; 0 for a cardinal acquisition."""
    radians = affines.obliquity(np.asarray(affine, dtype=np.float64))  # type: ignore[no-untyped-call]
    degrees: npt.NDArray[np.float64] = np.degrees(np.asarray(radians, dtype=np.float64))
    return degrees


def first_volume(img: Image) -> Image:
    """The first 3-D volume of `img`: a 3-D image is returned as is, a 4-D/5-D one is indexed at 0.

    NIfTI writers often store a single volume as (x, y, z, 1); analyses want plain 3-D.
    """
    if img.ndim < 3:
        raise ValueError(f"expected a 3-D or 4-D volume, got shape {img.shape}")
    if img.ndim == 3:
        return img
    # The slicer keeps the header (dim, pixdim) consistent with the sliced data.
    index = (slice(None),) * 3 + (0,) * (img.ndim - 3)
    volume: Image = img.slicer[index]
    return volume


def voxel_data(img: Image) -> npt.NDArray[np.float32]:
    """The voxel values as float32 with the header's scl_slope/scl_inter applied.

    float32 halves the memory of nibabel's float64 default; for an image already held as float32
    the array is returned without a copy (and it may be nibabel's cache: do not modify it).
    """
    data: npt.NDArray[np.float32] = img.get_fdata(dtype=np.float32)
    return data


def with_fresh_header(img: Image) -> Image:
    """The same voxels and geometry in a new NIfTI-1 header.

    A fresh header carries only geometry, data type and units: free-text fields of the upload
    (descrip, aux_file, intent_name, extensions) are left behind. The voxels are `stored_voxels`:
    scaled ones become float32, the values `voxel_data` gives; unscaled ones keep their type (and
    size), but for 64-bit integers (see `without_64bit_integers`).
    """
    data = stored_voxels(img)
    fresh = nib.Nifti1Image(data, img.affine)  # type: ignore[no-untyped-call]
    fresh.header.set_xyzt_units(*xyzt_unit_names(img.header))  # type: ignore[no-untyped-call]
    fresh.set_qform(img.affine, code=1)  # type: ignore[no-untyped-call]
    fresh.set_sform(img.affine, code=1)  # type: ignore[no-untyped-call]
    return fresh


def stored_voxels(img: Image) -> npt.NDArray[Any]:
    """The voxels a fresh header stores for `img`.

    float32 (`voxel_data`) when nibabel scales them as it reads them (scl_slope/scl_inter, which
    a loaded image keeps on its data object: its header's are reset); else the stored values in
    their own type, 64-bit integers narrowed (`without_64bit_integers`).
    """
    proxy: Any = img.dataobj
    scaled = nib.is_proxy(proxy) and (float(proxy.slope), float(proxy.inter)) != (1.0, 0.0)  # type: ignore[no-untyped-call]
    if scaled:
        return voxel_data(img)
    return without_64bit_integers(np.asanyarray(proxy))


def without_64bit_integers(data: npt.NDArray[Any]) -> npt.NDArray[Any]:
    """`data` as is, unless it holds int64/uint64 voxels: then int32 when every value fits, else float64.

    nibabel refuses to write 64-bit integers unasked, and few tools read them. float64 holds every
    integer up to 2**53 exactly; one beyond is rounded to the nearest float64 (a relative error
    under 1.2e-16), far finer than the float32 the analyses compute in (6e-8).
    """
    if data.dtype.kind not in "iu" or data.dtype.itemsize < 8:
        return data
    int32 = np.iinfo(np.int32)
    if data.size == 0 or (int(data.min()) >= int32.min and int(data.max()) <= int32.max):
        return data.astype(np.int32)
    return data.astype(np.float64)


def new_image(data: npt.ArrayLike, affine: npt.ArrayLike) -> Image:
    """A NIfTI-1 image of `data` on the grid `affine` (sform and qform both set, code 1; mm units).

    For derived volumes (label maps, probability maps) that must lie on an input's grid.
    """
    img = nib.Nifti1Image(np.asarray(data), np.asarray(affine, dtype=np.float64))  # type: ignore[no-untyped-call]
    img.header.set_xyzt_units("mm")  # type: ignore[no-untyped-call]
    img.set_qform(img.affine, code=1)  # type: ignore[no-untyped-call]
    img.set_sform(img.affine, code=1)  # type: ignore[no-untyped-call]
    return img


def reoriented(img: Image, codes: str | tuple[str, str, str]) -> Image:
    """`img` with its voxel axes reordered/flipped to point towards `codes` (e.g. "RAS", "LPI").

    Like `canonical`, an exact reordering: voxels keep their values and world coordinates.
    """
    start = orientations.io_orientation(img.affine)  # type: ignore[no-untyped-call]
    target = orientations.axcodes2ornt(tuple(codes))  # type: ignore[no-untyped-call]
    transform = orientations.ornt_transform(start, target)  # type: ignore[no-untyped-call]
    result: Image = img.as_reoriented(transform)  # type: ignore[no-untyped-call]
    return result
