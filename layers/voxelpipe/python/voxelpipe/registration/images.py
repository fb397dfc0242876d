"""nibabel <-> SimpleITK, one voxel grid to the other without moving a voxel in the world.

nibabel's affine maps voxel (i, j, k) to RAS+ millimetres; ITK describes the same grid by origin,
spacing and direction cosines in LPS+ millimetres, and its arrays run (k, j, i). Every conversion
goes through these two functions so the flip is written once.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import SimpleITK as sitk

from voxelpipe.volume import Image, new_image

RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0])


def to_sitk(img: Image, dtype: npt.DTypeLike = np.float32) -> sitk.Image:
    """`img`'s first volume as a SimpleITK image of `dtype` with the same world geometry."""
    data = np.asarray(img.dataobj, dtype=dtype)
    while data.ndim > 3:
        data = data[..., 0]
    return array_to_sitk(data, np.asarray(img.affine, dtype=np.float64))


def array_to_sitk(data: npt.NDArray[Any], affine: npt.NDArray[np.float64]) -> sitk.Image:
    """A SimpleITK image of `data` (voxel order i, j, k) on the nibabel grid `affine`."""
    linear = affine[:3, :3]
    spacing = np.linalg.norm(linear, axis=0)
    image = sitk.GetImageFromArray(np.ascontiguousarray(data.transpose(2, 1, 0)))
    image.SetSpacing([float(s) for s in spacing])
    image.SetDirection([float(v) for v in (RAS_TO_LPS @ (linear / spacing)).ravel()])
    image.SetOrigin([float(v) for v in RAS_TO_LPS @ affine[:3, 3]])
    return image


def sitk_affine(image: sitk.Image) -> npt.NDArray[np.float64]:
    """The nibabel (RAS+) affine of a SimpleITK image's grid."""
    direction = np.asarray(image.GetDirection(), dtype=np.float64).reshape(3, 3)
    affine = np.eye(4)
    affine[:3, :3] = RAS_TO_LPS @ direction @ np.diag(image.GetSpacing())
    affine[:3, 3] = RAS_TO_LPS @ np.asarray(image.GetOrigin(), dtype=np.float64)
    return affine


def to_nibabel(image: sitk.Image) -> Image:
    """A scalar SimpleITK image as a NIfTI-1 image (voxel order i, j, k) on the same world grid."""
    data = sitk.GetArrayFromImage(image).transpose(2, 1, 0)
    return new_image(data, sitk_affine(image))
