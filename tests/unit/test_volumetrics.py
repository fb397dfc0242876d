"""volumetrics: tissue volumes from probability maps with known volumes, partial volume, voxel
sizes, grids in any orientation, and from tissue-seg's NIfTI outputs."""

from __future__ import annotations

import math

import nibabel as nib
import numpy as np
import pytest

from voxelpipe.analyses.catalogue import AnalysisInput, AnalysisOutput
from voxelpipe.analyses.tissue_seg import PROBABILITY_FILES
from voxelpipe.analyses.volumetrics import (
    MEASURES,
    VOLUMETRICS,
    tissue_volumes,
    volumes_from_artifacts,
    volumetrics_output,
    voxel_volume_ml,
)
from voxelpipe.nifti import to_nifti_bytes
from voxelpipe.volume import canonical, orientation
from voxelpipe.wiring import Runtime


def _maps(shape=(40, 40, 40)) -> dict[str, np.ndarray]:
    """A 20x20x20 block split into WM (core), GM and CSF, plus one boundary slab of mixed voxels."""
    csf = np.zeros(shape, np.float32)
    gm = np.zeros(shape, np.float32)
    wm = np.zeros(shape, np.float32)
    csf[10:30, 10:30, 10:14] = 1.0  # 1600 voxels
    gm[10:30, 10:30, 14:20] = 1.0  # 2400
    wm[10:30, 10:30, 20:29] = 1.0  # 3600
    # A partial-volume slab: 70% GM, 30% WM in 400 voxels -> 280 GM + 120 WM voxel-equivalents.
    gm[10:30, 10:30, 29] = 0.7
    wm[10:30, 10:30, 29] = 0.3
    return {"csf": csf, "gm": gm, "wm": wm}


def test_catalogue_entry():
    assert VOLUMETRICS.name == "volumetrics"
    assert VOLUMETRICS.version == "1.0.0"
    assert VOLUMETRICS.runtime is Runtime.LAMBDA
    assert VOLUMETRICS.requires == ("tissue-seg",)
    assert MEASURES == ("gm_ml", "wm_ml", "csf_ml", "tiv_ml", "bpf")


def test_known_volumes_with_partial_volume():
    # 2 mm isotropic voxels: 8 mm^3 = 0.008 mL each.
    volumes = tissue_volumes(_maps(), voxel_ml=0.008)
    assert volumes["csf_ml"] == pytest.approx(1600 * 0.008)
    assert volumes["gm_ml"] == pytest.approx((2400 + 280) * 0.008)
    assert volumes["wm_ml"] == pytest.approx((3600 + 120) * 0.008)
    assert volumes["tiv_ml"] == pytest.approx(8000 * 0.008)
    assert volumes["bpf"] == pytest.approx((2680 + 3720) / 8000, abs=1e-5)


def test_voxel_volume_from_affine():
    assert voxel_volume_ml(np.diag([1.0, 1.0, 1.0, 1.0])) == pytest.approx(0.001)
    assert voxel_volume_ml(np.diag([-0.9, 1.2, 2.5, 1.0])) == pytest.approx(0.9 * 1.2 * 2.5 / 1000)
    a = math.radians(30)
    rotated = np.eye(4)
    rotated[:3, :3] = np.array([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1]]) * 2
    assert voxel_volume_ml(rotated) == pytest.approx(0.008)  # rotation changes nothing


def test_a_ball_of_known_radius():
    """A ball of GM probability 1 with a linear partial-volume rim: the volume is the ball's."""
    n, radius, spacing = 64, 20.0, 1.5  # mm
    centre = (n - 1) / 2
    r = np.sqrt(sum((g - centre) ** 2 for g in np.ogrid[:n, :n, :n])) * spacing
    gm = np.clip(radius / spacing - r / spacing + 0.5, 0, 1).astype(np.float32)  # 1-voxel ramp
    zeros = np.zeros_like(gm)
    volumes = tissue_volumes({"csf": zeros, "gm": gm, "wm": zeros}, spacing**3 / 1000)
    assert volumes["gm_ml"] == pytest.approx(4 / 3 * math.pi * radius**3 / 1000, rel=0.01)
    assert volumes["bpf"] == pytest.approx(1.0)


def _nifti(maps: dict[str, np.ndarray], affine: np.ndarray) -> dict[str, bytes]:
    return {
        PROBABILITY_FILES[t]: to_nifti_bytes(nib.Nifti1Image(maps[t], affine), compress=True)
        for t in ("csf", "gm", "wm")
    }


def test_from_nifti_in_any_orientation():
    maps = _maps()
    affine = np.diag([1.2, 1.2, 2.0, 1.0])
    ras = volumes_from_artifacts(_nifti(maps, affine))
    # The same maps on an LPS grid (voxels flipped, affine flipped to match): same volumes.
    flip = np.diag([-1.0, -1.0, 1.0, 1.0])
    flip[:2, 3] = [39, 39]
    lps = {t: np.ascontiguousarray(m[::-1, ::-1, :]) for t, m in maps.items()}
    assert orientation(affine @ flip) == ("L", "P", "S")
    assert volumes_from_artifacts(_nifti(lps, affine @ flip)) == ras
    assert ras["tiv_ml"] == pytest.approx(8000 * 1.2 * 1.2 * 2.0 / 1000)


def test_from_nifti_rejects_missing_and_mismatched_maps():
    files = _nifti(_maps(), np.eye(4))
    with pytest.raises(ValueError, match="missing"):
        volumes_from_artifacts({k: v for k, v in files.items() if "wm" not in k})
    other = _nifti(_maps(), np.diag([2.0, 1.0, 1.0, 1.0]))
    with pytest.raises(ValueError, match="one grid"):
        volumes_from_artifacts({**files, PROBABILITY_FILES["wm"]: other[PROBABILITY_FILES["wm"]]})


def test_empty_maps_have_no_bpf():
    zeros = np.zeros((4, 4, 4), np.float32)
    volumes = tissue_volumes({"csf": zeros, "gm": zeros, "wm": zeros}, 0.001)
    assert volumes["tiv_ml"] == 0 and volumes["bpf"] is None
    with pytest.raises(ValueError, match="missing"):
        tissue_volumes({"gm": zeros}, 0.001)
    with pytest.raises(ValueError, match="voxel volume"):
        tissue_volumes({"csf": zeros, "gm": zeros, "wm": zeros}, 0.0)


def test_output_from_tissue_seg_artifacts():
    maps = _maps()
    seg = AnalysisOutput(measures={}, artifacts=_nifti(maps, np.diag([2.0, 2.0, 2.0, 1.0])))
    img = nib.Nifti1Image(np.zeros((4, 4, 4), np.float32), np.eye(4))
    inp = AnalysisInput(image=canonical(img), original_orientation=orientation(img.affine), parameters={})
    out = volumetrics_output(inp, {"tissue-seg": seg})
    assert out.measures["gm_ml"] == pytest.approx(2680 * 0.008)
    assert out.measures["fractions_of_tiv"]["csf"] == pytest.approx(0.2)
    assert out.measures["source"] == "tissue-seg probability maps"
    assert out.artifacts == {}
