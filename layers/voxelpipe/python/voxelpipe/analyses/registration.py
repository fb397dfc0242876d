"""The `registration` analysis: the MNI template registered to the subject's brain.

The subject is tissue-seg's bias-corrected brain (its intermediate `brain_t1.nii.gz`, canonical
grid), so the skull-stripped template meets a skull-stripped, field-free subject like for like.
The transforms are the artifacts (voxelpipe.registration.transform_files); `regional` reads them
back to carry an atlas onto the subject. As a check, the template's GM and WM probability maps are
carried onto the subject too and compared with tissue-seg's (Dice at 0.5): a registration that
failed (a flipped or misplaced brain) shows as a low overlap and a warning.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final

import numpy as np

from voxelpipe.analyses.catalogue import REGISTRATION as REGISTRATION
from voxelpipe.analyses.catalogue import (
    REGISTRATION_PARAMETERS,
    TISSUE_SEG_BRAIN_T1_FILE,
    TISSUE_SEG_PROBABILITY_FILES,
    AnalysisInput,
    AnalysisOutput,
    merged_parameters,
)
from voxelpipe.nifti import load_nifti
from voxelpipe.registration import (
    RegistrationSettings,
    mni152_2009_template,
    register,
    transform_files,
    warp_probability_map,
)
from voxelpipe.volume import Image, canonical, new_image, voxel_data

METHODS: Final = ("demons", "bspline", "affine")
# Below this template/subject overlap of GM or WM the registration is flagged (a good one scores
# ~0.7-0.8 on real scans, a brain misplaced by a centimetre ~0.4).
LOW_OVERLAP: Final = 0.5


def _dice(a: np.ndarray[Any, Any], b: np.ndarray[Any, Any]) -> float:
    total = int(a.sum()) + int(b.sum())
    return round(2.0 * int(np.logical_and(a, b).sum()) / total, 4) if total else 0.0


def on_grid(img: Image, reference: Image) -> np.ndarray[Any, np.dtype[np.float32]]:
    """`img`'s voxels on `reference`'s canonical grid: tissue-seg's maps are on the upload's own
    grid, which is the canonical one reordered (checked: anything else is an error, not a guess)."""
    canon = canonical(img)
    if canon.shape[:3] != reference.shape[:3] or not np.allclose(canon.affine, reference.affine, atol=1e-3):
        raise ValueError("tissue-seg's maps are not on the volume's grid")
    return voxel_data(canon)


def _read(path: Path) -> Image:
    return load_nifti(path.read_bytes())


def run_registration(inp: AnalysisInput) -> AnalysisOutput:
    params = merged_parameters("registration", REGISTRATION_PARAMETERS, inp.parameters)
    method = params["method"]
    if method not in METHODS:
        raise ValueError(f"registration method {method!r} is not one of {', '.join(METHODS)}")
    seg = inp.requirements["tissue-seg"]
    subject = load_nifti(seg.intermediates[TISSUE_SEG_BRAIN_T1_FILE])
    template = mni152_2009_template()
    registration = register(subject, _read(template.t1), RegistrationSettings(method=method))
    overlap: dict[str, float] = {}
    for tissue, path in (("gm", template.gm), ("wm", template.wm)):
        # The template's maps are uint8 0..255: scaled to probabilities before the warp.
        raw = _read(path)
        scaled = new_image(np.asarray(raw.dataobj, dtype=np.float32) / 255.0, raw.affine)
        warped = voxel_data(warp_probability_map(scaled, registration, subject))
        own = on_grid(load_nifti(seg.artifacts[TISSUE_SEG_PROBABILITY_FILES[tissue]]), subject)
        overlap[f"{tissue}_dice"] = _dice(warped >= 0.5, own >= 0.5)
    warnings = [
        f"low template/subject {name.split('_')[0].upper()} overlap ({value}): check the registration"
        for name, value in overlap.items()
        if value < LOW_OVERLAP
    ]
    return AnalysisOutput(
        measures={
            "template": template.provenance(),
            "method": registration.describe(),
            "direction": "subject point -> template point: affine(x + forward(x)); inverse back",
            "files": {
                "affine": "affine.tfm (ITK text transform)",
                "forward": "forward_displacement.nii.gz (LPS mm displacements, subject grid)",
                "inverse": "inverse_displacement.nii.gz",
            },
            "overlap_with_segmentation": overlap,
            "timings_s": {stage: round(seconds, 3) for stage, seconds in registration.seconds.items()},
            "warnings": warnings,
        },
        artifacts=transform_files(registration),
    )
