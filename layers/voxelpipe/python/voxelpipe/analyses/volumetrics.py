"""The `volumetrics` analysis: tissue volumes (mL), intracranial volume and brain parenchymal fraction.

Volumes are sums of tissue probabilities times the voxel volume, so a boundary voxel that is 30 %
GM adds 0.3 of a voxel to GM: partial volume counts, and the three volumes add up to the brain
mask's volume exactly (the probabilities sum to 1 inside it).

* gm_ml, wm_ml, csf_ml -- sums of `prob_gm`, `prob_wm`, `prob_csf`;
* tiv_ml -- total intracranial volume estimate: GM + WM + CSF, i.e. the brain mask. It includes
  the ventricles and the CSF the mask holds around the brain; how much extracerebral CSF that is
  depends on the mask (an extracted mask is closed over the sulci but stops at the brain's outer
  surface; an already skull-stripped input's mask is whatever its tool kept), so it reads low
  against a skull-based ICV by roughly the subarachnoid CSF outside the mask;
* bpf -- brain parenchymal fraction, (GM + WM) / TIV.

Volumes do not depend on the grid's orientation: the probability maps on the canonical grid and
on the input's own grid hold the same voxels.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from voxelpipe.analyses.catalogue import VOLUMETRICS as VOLUMETRICS
from voxelpipe.analyses.catalogue import VOLUMETRICS_MEASURES, AnalysisInput, AnalysisOutput
from voxelpipe.analyses.tissue_seg import PROBABILITY_FILES, TissueSegParameters, segment_image
from voxelpipe.nifti import load_nifti
from voxelpipe.tissues import TISSUES
from voxelpipe.volume import voxel_data

MEASURES: tuple[str, ...] = VOLUMETRICS_MEASURES
_GRID_TOLERANCE = 1e-4  # affines of the three probability maps must agree this closely (mm)


def voxel_volume_ml(affine: npt.ArrayLike) -> float:
    """The volume of one voxel in mL: |det| of the affine's 3x3 part, in mm^3, over 1000."""
    matrix = np.asarray(affine, dtype=np.float64)[:3, :3]
    return abs(float(np.linalg.det(matrix))) / 1000.0


def tissue_volumes(probabilities: Mapping[str, npt.ArrayLike], voxel_ml: float) -> dict[str, float | None]:
    """GM, WM, CSF and intracranial volumes (mL) and BPF from per-tissue probability maps.

    `probabilities` maps "csf", "gm", "wm" to arrays of one grid; `voxel_ml` is one voxel's
    volume. Sums are in float64 (float32 sums of ~10^6 voxels lose mL). BPF is None when the maps
    are all zero.
    """
    missing = [t for t in TISSUES if t not in probabilities]
    if missing:
        raise ValueError(f"missing probability maps: {', '.join(missing)}")
    if not voxel_ml > 0:
        raise ValueError("voxel volume must be > 0")
    sums = {t: float(np.sum(np.asarray(probabilities[t]), dtype=np.float64)) * voxel_ml for t in TISSUES}
    tiv = sums["csf"] + sums["gm"] + sums["wm"]
    return {
        "gm_ml": round(sums["gm"], 3),
        "wm_ml": round(sums["wm"], 3),
        "csf_ml": round(sums["csf"], 3),
        "tiv_ml": round(tiv, 3),
        "bpf": round((sums["gm"] + sums["wm"]) / tiv, 5) if tiv > 0 else None,
    }


def volumes_from_artifacts(artifacts: Mapping[str, bytes]) -> dict[str, float | None]:
    """Volumes from tissue-seg's probability maps as NIfTI bytes (`prob_csf.nii.gz`, ...)."""
    maps: dict[str, npt.NDArray[np.float32]] = {}
    affine: npt.NDArray[np.float64] | None = None
    for tissue in TISSUES:
        name = PROBABILITY_FILES[tissue]
        if name not in artifacts:
            raise ValueError(f"tissue-seg output {name} is missing")
        img = load_nifti(artifacts[name])
        if affine is None:
            affine = np.asarray(img.affine, dtype=np.float64)
        elif not np.allclose(affine, img.affine, atol=_GRID_TOLERANCE):
            raise ValueError("the probability maps are not on one grid")
        maps[tissue] = voxel_data(img)
    assert affine is not None
    return tissue_volumes(maps, voxel_volume_ml(affine))


def volumetrics_output(
    inp: AnalysisInput, upstream: Mapping[str, AnalysisOutput] | None = None
) -> AnalysisOutput:
    """The analysis' output: from tissue-seg's probability maps when `upstream["tissue-seg"]` is
    given, else by segmenting `inp.image` here with tissue-seg's default parameters (volumetrics
    has none of its own)."""
    seg = (upstream or {}).get("tissue-seg")
    if seg is not None:
        volumes = volumes_from_artifacts(seg.artifacts)
        source = "tissue-seg probability maps"
    else:
        params = TissueSegParameters.from_mapping({})
        result, canon, _ = segment_image(inp.image, params)
        maps = {t: result.probabilities[i] for i, t in enumerate(TISSUES)}
        volumes = tissue_volumes(maps, voxel_volume_ml(canon.affine))
        source = "segmented here (no tissue-seg output was passed)"
    tiv = volumes["tiv_ml"]
    measures: dict[str, Any] = {
        **volumes,
        "fractions_of_tiv": {
            t: (round(v / tiv, 5) if tiv and v is not None else None)
            for t, v in (("gm", volumes["gm_ml"]), ("wm", volumes["wm_ml"]), ("csf", volumes["csf_ml"]))
        },
        "method": "sums of tissue probabilities times the voxel volume (partial volume counts)",
        "tiv_method": "GM + WM + CSF inside the brain mask (excludes CSF outside the mask)",
        "source": source,
    }
    return AnalysisOutput(measures=measures)


def run_volumetrics(inp: AnalysisInput) -> AnalysisOutput:
    return volumetrics_output(inp, inp.requirements)
