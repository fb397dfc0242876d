"""Two scans of one subject in a halfway space: a rigid registration, split in half.

The rigid transform T maps baseline points to follow-up points (SimpleITK's convention: it
resamples the follow-up onto the baseline). Its half H (H o H = T: half the rotation angle about
the same axis, the translation that completes it) puts both scans into a space between them: a
halfway point y is the baseline point H^-1(y) and the follow-up point H(y). Each scan is resampled
once, through a transform of the same size, onto one grid that neither scan owns, so neither is
favoured by being left alone while the other is interpolated (Smith et al. 2002, SIENA; Reuter et
al. 2010, FreeSurfer's longitudinal stream).

The rigid fit: the two bias-corrected brains (each inside its own mask grown by a few mm, so the
brain's edge is seen in the images' own intensities) smoothed onto a 2 mm grid, normalised
correlation (same contrast, different gains), gradient descent on a pyramid 4, 2, 1, centred on
the brains' intensity moments.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import SimpleITK as sitk
from scipy.spatial.transform import Rotation

from voxelpipe.registration.register import working_grid

__all__ = [
    "RigidFit",
    "half_of",
    "halfway_grid",
    "register_rigid",
    "resample_onto",
]

SAMPLING_SEED: Final = 20261


@dataclass(frozen=True)
class RigidFit:
    """Baseline point -> follow-up point: x -> matrix @ x + translation (SimpleITK's LPS mm)."""

    matrix: npt.NDArray[np.float64]
    translation: npt.NDArray[np.float64]

    def transform(self) -> sitk.AffineTransform:
        affine = sitk.AffineTransform(3)
        affine.SetMatrix([float(v) for v in self.matrix.ravel()])
        affine.SetTranslation([float(v) for v in self.translation])
        return affine

    def inverse(self) -> RigidFit:
        inverse = self.matrix.T  # a rotation
        return RigidFit(inverse, -inverse @ self.translation)

    def rotation_deg(self) -> float:
        return float(np.degrees(Rotation.from_matrix(self.matrix).magnitude()))

    def apply(self, points: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        result: npt.NDArray[np.float64] = points @ self.matrix.T + self.translation
        return result


def half_of(rigid: RigidFit) -> RigidFit:
    """H with H o H = `rigid`: the rotation vector halved, s = (S + I)^-1 t (S s + s = t)."""
    half = Rotation.from_rotvec(Rotation.from_matrix(rigid.matrix).as_rotvec() / 2).as_matrix()
    translation = np.linalg.solve(half + np.eye(3), rigid.translation)
    return RigidFit(np.asarray(half, dtype=np.float64), np.asarray(translation, dtype=np.float64))


def _smoothed_onto_grid(image: sitk.Image, spacing_mm: float) -> sitk.Image:
    grid = working_grid(image, spacing_mm)
    smooth = sitk.SmoothingRecursiveGaussian(image, spacing_mm / 2)
    return sitk.Resample(smooth, grid, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32)


def register_rigid(
    baseline: sitk.Image, followup: sitk.Image, working_mm: float = 2.0, iterations: int = 200
) -> RigidFit:
    """The rigid transform from baseline points to follow-up points (both images brains on a dark
    background, intensities on a common scale)."""
    fixed = _smoothed_onto_grid(baseline, working_mm)
    moving = _smoothed_onto_grid(followup, working_mm)
    initial = sitk.CenteredTransformInitializer(
        fixed, moving, sitk.Euler3DTransform(), sitk.CenteredTransformInitializerFilter.MOMENTS
    )
    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsCorrelation()
    method.SetMetricSamplingStrategy(method.RANDOM)
    method.SetMetricSamplingPercentage(0.5, SAMPLING_SEED)
    method.SetInterpolator(sitk.sitkLinear)
    method.SetOptimizerAsRegularStepGradientDescent(
        learningRate=2.0, minStep=1e-4, numberOfIterations=iterations, relaxationFactor=0.6
    )
    method.SetOptimizerScalesFromPhysicalShift()
    method.SetShrinkFactorsPerLevel([4, 2, 1])
    method.SetSmoothingSigmasPerLevel([2, 1, 0])
    method.SmoothingSigmasAreSpecifiedInPhysicalUnitsOff()
    method.SetInitialTransform(initial, inPlace=False)
    result = sitk.CompositeTransform(method.Execute(fixed, moving))
    result.FlattenTransform()
    euler = sitk.Euler3DTransform(result.GetNthTransform(0))
    matrix = np.asarray(euler.GetMatrix(), dtype=np.float64).reshape(3, 3)
    centre = np.asarray(euler.GetCenter(), dtype=np.float64)
    offset = np.asarray(euler.GetTranslation(), dtype=np.float64) + centre - matrix @ centre
    return RigidFit(matrix, offset)


def _mask_corners(mask: sitk.Image) -> npt.NDArray[np.float64]:
    """The physical corners of the mask's bounding box (8 x 3, LPS mm)."""
    voxels = np.argwhere(sitk.GetArrayViewFromImage(mask) > 0)[:, ::-1]  # (i, j, k)
    if not len(voxels):
        voxels = np.asarray([[0, 0, 0], [n - 1 for n in mask.GetSize()]])
    low, high = voxels.min(axis=0) - 0.5, voxels.max(axis=0) + 0.5
    corners = [[(low, high)[(c >> axis) & 1][axis] for axis in range(3)] for c in range(8)]
    return np.asarray(
        [mask.TransformContinuousIndexToPhysicalPoint([float(v) for v in corner]) for corner in corners]
    )


def halfway_grid(
    baseline_mask: sitk.Image,
    followup_mask: sitk.Image,
    half: RigidFit,
    spacing_mm: float,
    margin_mm: float,
) -> sitk.Image:
    """An empty isotropic grid in the halfway space over both brains (each carried there: a
    baseline point x is the halfway point H(x), a follow-up point H^-1(x)), grown by `margin_mm`.

    Its axes are ITK's physical axes (identity direction): SimpleITK's demons and its Jacobian
    determinant filter differentiate along the grid's index axes, so on a grid with flipped axes
    (a canonical RAS scan is diag(-1, -1, 1) in LPS) the determinant's terms change sign.
    """
    direction = np.eye(3)
    points = np.vstack(
        [half.apply(_mask_corners(baseline_mask)), half.inverse().apply(_mask_corners(followup_mask))]
    )
    along = points @ direction  # coordinates along the grid's axes
    low, high = along.min(axis=0) - margin_mm, along.max(axis=0) + margin_mm
    size = [max(1, int(np.ceil((h - lo) / spacing_mm))) for lo, h in zip(low, high, strict=True)]
    grid = sitk.Image(size, sitk.sitkFloat32)
    grid.SetSpacing([spacing_mm] * 3)
    grid.SetDirection([float(v) for v in direction.ravel()])
    grid.SetOrigin([float(v) for v in direction @ (low + spacing_mm / 2)])
    return grid


def resample_onto(image: sitk.Image, grid: sitk.Image, to_image: RigidFit, interpolator: Any) -> sitk.Image:
    """`image` on `grid`: each grid point x sampled at the image's point `to_image`(x); 0 outside."""
    return sitk.Resample(image, grid, to_image.transform(), interpolator, 0.0, sitk.sitkFloat32)
