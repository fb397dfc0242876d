"""The `regional` analysis: regional volumes from an atlas carried onto the subject.

1. The atlas's label map (template space) is resampled onto the subject's canonical grid through
   the `registration` analysis's transforms, nearest neighbour (labels stay labels), and kept
   inside tissue-seg's brain mask.
2. Each region the atlas maps (`voxelpipe.atlases.REGIONS`: left and right hippocampus, amygdala,
   thalamus, caudate, putamen, pallidum, lateral ventricle, frontal/temporal/parietal/occipital
   grey matter) is the union of its labels; its volume is the sum, over its voxels, of the
   probability of the tissue it is made of, times the voxel volume (partial volume counts):
   grey matter for cortex, hippocampus, amygdala, caudate and putamen; grey plus white matter
   (the parenchyma) for the thalamus and pallidum, whose T1 intensity lies between the two; CSF
   for the ventricles. `label_ml` is the region's voxel count alone, for comparison.
3. Asymmetry per structure: (L - R) / ((L + R) / 2); fractions of the TIV (GM + WM + CSF inside
   the brain mask, as `volumetrics` computes it).

Outputs: `regions.nii.gz` (region numbers, the input's own grid), `regions.csv` (number, region,
volumes) and three overlay PNGs through the hippocampi.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from dataclasses import asdict
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from voxelpipe.analyses.catalogue import REGIONAL as REGIONAL
from voxelpipe.analyses.catalogue import (
    REGIONAL_LABELS_FILE,
    REGIONAL_OVERLAYS,
    REGIONAL_PARAMETERS,
    REGIONAL_TABLE_FILE,
    TISSUE_SEG_BRAIN_T1_FILE,
    TISSUE_SEG_MASK_FILE,
    TISSUE_SEG_PROBABILITY_FILES,
    AnalysisInput,
    AnalysisOutput,
    merged_parameters,
)
from voxelpipe.analyses.registration import on_grid
from voxelpipe.analyses.tissue_seg import overlay_previews
from voxelpipe.analyses.volumetrics import tissue_volumes, voxel_volume_ml
from voxelpipe.atlases import REGION_NUMBERS, REGIONS, RIGHT_SHADE, STRUCTURE_COLOURS, STRUCTURES, Atlas
from voxelpipe.atlases.bundled import default_atlas
from voxelpipe.nifti import load_nifti, to_nifti_bytes
from voxelpipe.registration import (
    LocalRefinement,
    mni152_2009_template,
    refine_locally,
    registration_from_files,
    warp_label_map,
)
from voxelpipe.tissues import TISSUES
from voxelpipe.volume import Image, new_image, voxel_data, voxel_sizes


def region_palette() -> npt.NDArray[np.float32]:
    """RGB per region number (0: none): a hue per structure, the right side a shade darker."""
    palette = np.zeros((len(REGIONS) + 1, 3), dtype=np.float32)
    for key, number in REGION_NUMBERS.items():
        region = REGIONS[key]
        shade = 1.0 if region.side == "left" else RIGHT_SHADE
        palette[number] = np.asarray(STRUCTURE_COLOURS[region.structure], dtype=np.float32) * shade
    return palette


def region_map(labels: npt.NDArray[np.integer[Any]], atlas: Atlas) -> npt.NDArray[np.uint8]:
    """The region number of each voxel (0: in no reported region) from the atlas's labels."""
    lookup = np.zeros(int(max(atlas.labels, default=0)) + 1, dtype=np.uint8)
    for key, indices in atlas.region_labels().items():
        lookup[list(indices)] = REGION_NUMBERS[key]
    inside = (labels > 0) & (labels < lookup.size)
    regions = np.zeros(labels.shape, dtype=np.uint8)
    regions[inside] = lookup[labels[inside]]
    return regions


def regional_measures(
    regions: npt.NDArray[np.uint8],
    probabilities: Mapping[str, npt.NDArray[np.float32]],
    voxel_ml: float,
    mapped: Mapping[str, tuple[int, ...]],
) -> dict[str, Any]:
    """Per region: volume (mL, of its tissue), label volume (mL), fraction of the TIV; per
    structure: left + right and asymmetry. `mapped` names the regions the atlas maps."""
    tiv = tissue_volumes(probabilities, voxel_ml)["tiv_ml"] or 0.0
    flat = regions.ravel()
    bins = len(REGIONS) + 1
    sums = {
        tissue: np.bincount(flat, weights=probabilities[tissue].ravel().astype(np.float64), minlength=bins)
        for tissue in TISSUES
    }
    counts = np.bincount(flat, minlength=bins)
    tissue_sums = {"gm": sums["gm"], "parenchyma": sums["gm"] + sums["wm"], "csf": sums["csf"]}
    per_region: dict[str, dict[str, Any]] = {}
    for key, number in REGION_NUMBERS.items():
        if key not in mapped:
            continue
        region = REGIONS[key]
        volume = float(tissue_sums[region.tissue][number]) * voxel_ml
        per_region[key] = {
            "volume_ml": round(volume, 3),
            "label_ml": round(float(counts[number]) * voxel_ml, 3),
            "fraction_of_tiv": round(volume / tiv, 6) if tiv > 0 else None,
            "tissue": region.tissue,
            "number": number,
        }
    structures: dict[str, dict[str, Any]] = {}
    for structure in STRUCTURES:
        left, right = per_region.get(f"{structure}_left"), per_region.get(f"{structure}_right")
        if left is None or right is None:
            continue
        total = left["volume_ml"] + right["volume_ml"]
        structures[structure] = {
            "total_ml": round(total, 3),
            "asymmetry": round((left["volume_ml"] - right["volume_ml"]) / (total / 2), 4)
            if total > 0
            else None,
        }
    return {"tiv_ml": round(tiv, 3), "regions": per_region, "structures": structures}


def regions_csv(regions: Mapping[str, Mapping[str, Any]]) -> bytes:
    out = io.StringIO()
    out.write("number,region,structure,side,tissue,volume_ml,label_ml,fraction_of_tiv\n")
    for key, row in regions.items():
        region = REGIONS[key]
        fraction = "" if row["fraction_of_tiv"] is None else row["fraction_of_tiv"]
        out.write(
            f"{row['number']},{key},{region.structure},{region.side},{row['tissue']},"
            f"{row['volume_ml']},{row['label_ml']},{fraction}\n"
        )
    return out.getvalue().encode("utf-8")


def _centre(regions: npt.NDArray[np.uint8], keys: tuple[str, ...]) -> tuple[int, int, int] | None:
    """The voxel between the centroids of `keys`' regions (the hippocampi), None when absent."""
    inside = np.isin(regions, [REGION_NUMBERS[key] for key in keys])
    if not inside.any():
        return None
    i, j, k = (round(float(c)) for c in np.argwhere(inside).mean(axis=0))
    return (i, j, k)


def run_regional(inp: AnalysisInput) -> AnalysisOutput:
    params = merged_parameters("regional", REGIONAL_PARAMETERS, inp.parameters)
    atlas: Atlas = inp.references.get("atlas") or default_atlas()
    seg = inp.requirements["tissue-seg"]
    registration_output = inp.requirements["registration"]
    subject = load_nifti(seg.intermediates[TISSUE_SEG_BRAIN_T1_FILE])
    registration = registration_from_files(registration_output.artifacts)
    probabilities = {
        tissue: on_grid(load_nifti(seg.artifacts[name]), subject)
        for tissue, name in TISSUE_SEG_PROBABILITY_FILES.items()
    }
    mask = on_grid(load_nifti(seg.artifacts[TISSUE_SEG_MASK_FILE]), subject) > 0
    atlas_image = load_nifti(atlas.label_map)
    labels = np.asarray(warp_label_map(atlas_image, registration, subject).dataobj).astype(np.int64)
    refined = []
    if params["local_refinement"]:
        template = load_nifti(mni152_2009_template().t1.read_bytes())
        # Both boxes from the global warp, computed once (a 12-voxel margin never reaches the other side).
        warped = region_map(labels, atlas)
        for side in ("left", "right"):
            box = _refinement_box(warped, side, labels.shape, LocalRefinement().margin)
            if box is None:
                continue
            transform, part = refine_locally(registration, subject, template, box)
            labels[box] = np.asarray(warp_label_map(atlas_image, transform, part).dataobj)
            refined.append(side)
    regions = np.where(mask, region_map(labels, atlas), 0).astype(np.uint8)
    measures = regional_measures(
        regions, probabilities, voxel_volume_ml(subject.affine), atlas.region_labels()
    )

    previews, preview_info = overlay_previews(
        voxel_data(subject),
        regions,
        mask,
        voxel_sizes(subject.affine),
        int(params["preview_max_px"]),
        params["display_convention"] == "radiological",
        palette=region_palette(),
        centre=_centre(regions, ("hippocampus_left", "hippocampus_right")),
        names=REGIONAL_OVERLAYS,
    )
    missing = [key for key in REGIONS if key not in measures["regions"]]
    # A registration that failed its overlap check makes every region suspect: said, not hidden.
    warnings = [f"registration: {warning}" for warning in registration_output.measures.get("warnings", [])]
    warnings += [
        f"{key}: no voxel of the region on the subject"
        for key, row in measures["regions"].items()
        if row["label_ml"] == 0
    ]
    return AnalysisOutput(
        measures={
            **measures,
            "units": {"volume_ml": "mL", "label_ml": "mL", "fraction_of_tiv": "1", "asymmetry": "1"},
            "atlas": atlas.provenance(),
            "template": registration_output.measures.get("template"),
            "registration": registration_output.measures.get("method"),
            "local_refinement": {
                "structures": list(REFINED_STRUCTURES) if refined else [],
                "sides": refined,
                "method": "diffeomorphic demons at the subject's resolution in a box around them",
                **asdict(LocalRefinement()),
            },
            "method": (
                "atlas labels carried onto the subject (nearest neighbour) inside the brain mask, "
                "hippocampus and amygdala through a local refinement at the subject's resolution; "
                "volume = sum of the region's tissue probability (GM; GM+WM for thalamus and "
                "pallidum; CSF for ventricles) x voxel volume; asymmetry = (L-R)/((L+R)/2)"
            ),
            "regions_not_in_atlas": missing,
            "reliable": not warnings,
            "warnings": warnings,
            "notes": [*atlas.notes, *_space_note(atlas, registration_output.measures.get("template"))],
            "preview": {**preview_info, "slice": "through the hippocampi"},
        },
        artifacts={
            REGIONAL_LABELS_FILE: _original_grid_labels(regions, subject, inp),
            REGIONAL_TABLE_FILE: regions_csv(measures["regions"]),
            **previews,
        },
    )


def _space_note(atlas: Atlas, template: Mapping[str, Any] | None) -> list[str]:
    """A note when the atlas was drawn in another space than the template registration used."""
    name = (template or {}).get("template")
    if name is None or atlas.space == name:
        return []
    return [
        f"the atlas was drawn in {atlas.space} and is carried as if it were in {name}, the "
        "registration's template: regions may be offset where the two spaces differ (a few "
        "millimetres between MNI variants)"
    ]


# Refined at the subject's own resolution: the medial temporal structures, where atrophy is read.
REFINED_STRUCTURES: Final = ("hippocampus", "amygdala")


def _refinement_box(
    regions: npt.NDArray[np.uint8], side: str, shape: tuple[int, ...], margin: int
) -> tuple[slice, slice, slice] | None:
    """The voxel box around one side's refined structures, grown by `margin`; None when absent."""
    numbers = [REGION_NUMBERS[f"{structure}_{side}"] for structure in REFINED_STRUCTURES]
    inside = np.argwhere(np.isin(regions, numbers))
    if not inside.size:
        return None
    low = np.maximum(inside.min(axis=0) - margin, 0)
    high = np.minimum(inside.max(axis=0) + margin + 1, shape[:3])
    return (
        slice(int(low[0]), int(high[0])),
        slice(int(low[1]), int(high[1])),
        slice(int(low[2]), int(high[2])),
    )


def _original_grid_labels(regions: npt.NDArray[np.uint8], subject: Image, inp: AnalysisInput) -> bytes:
    """The region map on the upload's own grid (an exact reordering of the canonical one)."""
    from voxelpipe.segmentation import to_grid

    affine, shape = subject.affine, regions.shape
    if inp.original_affine is not None and inp.original_shape is not None:
        affine, shape = inp.original_affine, tuple(int(n) for n in inp.original_shape[:3])
        regions = np.asarray(
            to_grid(regions, subject.affine, affine, shape, "nearest", "cpu"), dtype=np.uint8
        )
    return to_nifti_bytes(new_image(regions, affine), compress=True)
