"""The report's arrays from the study's NIfTI files: the de-identified volume and the label maps,
each reordered to RAS (a reordering, never a resampling), and checked to share one grid."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from voxelpipe.nifti import NiftiError, load_nifti
from voxelpipe.report.html import ReportArrays
from voxelpipe.volume import canonical, first_volume, voxel_data, voxel_sizes


def _labels(
    data: bytes | None, name: str, volume_affine: npt.NDArray[Any], shape: tuple[int, ...], notes: list[str]
) -> npt.NDArray[np.uint8] | None:
    if data is None:
        return None
    try:
        image = canonical(load_nifti(data))
    except (NiftiError, ValueError) as error:
        notes.append(f"the {name} map could not be read ({error}): not drawn")
        return None
    if tuple(image.shape[:3]) != shape or not np.allclose(image.affine, volume_affine, atol=1e-3):
        notes.append(f"the {name} map is not on the volume's grid: not drawn")
        return None
    return np.asarray(image.dataobj, dtype=np.uint8)


def report_arrays(volume: bytes, tissue_labels: bytes | None, region_labels: bytes | None) -> ReportArrays:
    """The arrays of a report from NIfTI bytes (.nii or .nii.gz): the volume the analyses measured,
    tissue-seg's labels.nii.gz and regional's regions.nii.gz (None: not run). Raises NiftiError
    when the volume cannot be read; a label map that cannot is left out with a note."""
    image = canonical(first_volume(load_nifti(volume)))
    data = voxel_data(image)
    zooms = tuple(float(z) for z in voxel_sizes(image.affine))
    notes: list[str] = []
    shape = tuple(int(n) for n in data.shape)
    return ReportArrays(
        volume=data,
        zooms=(zooms[0], zooms[1], zooms[2]),
        tissue_labels=_labels(tissue_labels, "tissue segmentation", image.affine, shape, notes),
        region_labels=_labels(region_labels, "region", image.affine, shape, notes),
        notes=notes,
    )
