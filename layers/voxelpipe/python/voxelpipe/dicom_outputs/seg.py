"""DICOM Segmentation objects (highdicom) of tissue-seg's classes and regional's regions.

Two SEG objects, not one: regional's regions lie inside the tissue classes (a hippocampus voxel is
also grey matter), and a label map (LABELMAP) cannot hold overlapping segments; each object's
segments are disjoint, so either segmentation type can be written from one label array.

The segmentation type is BINARY by default: it is what every SEG reader (Orthanc's viewers, OHIF,
3D Slicer, dcmqi) has read since the SEG IOD exists; LABELMAP (DICOM 2024c, highdicom >= 0.23)
is smaller but few viewers read it yet. `SegmentationType` chooses per receiving system.

Segment codes (SNOMED CT, from pydicom's code dictionary): the category is Anatomical Structure
(SCT 91723000) for grey and white matter and every region, Body Substance (SCT 91720002) for CSF;
the type is the structure's own concept (Gray matter 389081007, White matter 389080008,
Cerebrospinal fluid 65216001, Hippocampus 5366008, Amygdala, Thalamus, Caudate nucleus, Putamen,
Globus pallidus, Lateral ventricle, Frontal/Temporal/Parietal/Occipital lobe), with the side as a
type modifier (Left 7771000 / Right 24028007). The lobe "_gm" regions are that lobe's grey matter:
typed as the lobe (the segment label says "grey matter"), since SNOMED has no pre-coordinated
lobe-cortex concept in pydicom's dictionary. A region without a code of its own (none today) falls
back to the generic Anatomical Structure type with its name in SegmentLabel.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

import highdicom as hd
import numpy as np
import numpy.typing as npt
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

from voxelpipe.atlases import REGION_NUMBERS, REGIONS
from voxelpipe.atlases.atlas import region_colour
from voxelpipe.dicom_outputs.common import (
    DEVICE_SERIAL,
    MANUFACTURER,
    MODEL,
    Analysis,
    on_source_timeline,
    software_versions,
)
from voxelpipe.dicom_outputs.geometry import frame_geometry, labels_on_frames
from voxelpipe.tissues import COLOURS, LABELS, NAMES, TISSUES


class SegmentationType(StrEnum):
    BINARY = "BINARY"
    LABELMAP = "LABELMAP"


DEFAULT_SEGMENTATION_TYPE: Final = SegmentationType.BINARY

_TISSUE_CODES: Final[Mapping[str, tuple[Code, Code]]] = {
    "csf": (codes.SCT.BodySubstance, codes.SCT.CerebrospinalFluid),
    "gm": (codes.SCT.AnatomicalStructure, codes.SCT.GrayMatter),
    "wm": (codes.SCT.AnatomicalStructure, codes.SCT.WhiteMatter),
}
_STRUCTURE_KEYWORDS: Final[Mapping[str, str]] = {
    "hippocampus": "Hippocampus",
    "amygdala": "Amygdala",
    "thalamus": "Thalamus",
    "caudate": "CaudateNucleus",
    "putamen": "Putamen",
    "pallidum": "GlobusPallidus",
    "lateral_ventricle": "LateralVentricle",
    "frontal_gm": "FrontalLobe",
    "temporal_gm": "TemporalLobe",
    "parietal_gm": "ParietalLobe",
    "occipital_gm": "OccipitalLobe",
}
_SIDES: Final[Mapping[str, Code]] = {"left": codes.SCT.Left, "right": codes.SCT.Right}


@dataclass(frozen=True)
class Segment:
    """One segment: its number in the SEG, the label value it comes from, and how it is coded."""

    number: int
    label: int
    key: str  # the tissue ("gm") or region ("hippocampus_left") as results.json names it
    name: str
    category: Code
    property_type: Code
    colour: tuple[int, int, int]
    modifier: Code | None = None


def tissue_segments() -> list[Segment]:
    """tissue-seg's classes, numbered by their label values (1 CSF, 2 GM, 3 WM)."""
    return [
        Segment(LABELS[t], LABELS[t], t, NAMES[t], *_TISSUE_CODES[t], colour=COLOURS[t])
        for t in sorted(TISSUES, key=lambda t: LABELS[t])
    ]


def structure_code(structure: str) -> Code:
    keyword = _STRUCTURE_KEYWORDS.get(structure)
    code: Code = getattr(codes.SCT, keyword) if keyword is not None else codes.SCT.AnatomicalStructure
    return code


def region_name(key: str) -> str:
    region = REGIONS[key]
    structure = region.structure.removesuffix("_gm").replace("_", " ")
    suffix = " grey matter" if region.structure.endswith("_gm") else ""
    return f"{region.side.capitalize()} {structure}{suffix}"


def region_segments() -> list[Segment]:
    """regional's regions, numbered by their region numbers (REGION_NUMBERS: 1..N, in order)."""
    return [
        Segment(
            number,
            number,
            key,
            region_name(key),
            codes.SCT.AnatomicalStructure,
            structure_code(REGIONS[key].structure),
            colour=region_colour(REGIONS[key]),
            modifier=_SIDES[REGIONS[key].side],
        )
        for key, number in REGION_NUMBERS.items()
    ]


def _description(segment: Segment, analysis: Analysis) -> hd.seg.SegmentDescription:
    description = hd.seg.SegmentDescription(
        segment_number=segment.number,
        segment_label=segment.name,
        segmented_property_category=segment.category,
        segmented_property_type=segment.property_type,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=analysis.algorithm_identification(),
        tracking_uid=hd.UID(),
        tracking_id=segment.key,
        display_color=hd.color.CIELabColor.from_rgb(*segment.colour),
    )
    if segment.modifier is not None:
        # The side qualifies the type (the Segment Description macro's modifier sequence).
        type_item = description.SegmentedPropertyTypeCodeSequence[0]
        type_item.SegmentedPropertyTypeModifierCodeSequence = DicomSequence(
            [hd.sr.CodedConcept.from_code(segment.modifier)]
        )
    return description


def source_images(datasets: Sequence[Dataset], series_uid: str | None) -> list[Dataset]:
    """The source series' single-frame images, in slice order along their normal. ValueError when
    there are none, or they are multi-frame (not supported here yet)."""
    images = [
        ds
        for ds in datasets
        if "Rows" in ds  # an image (read with or without its pixels)
        and ds.get("SOPClassUID") not in hd.seg.SOP_CLASS_UIDS
        and (series_uid is None or ds.get("SeriesInstanceUID") == series_uid)
    ]
    if not images:
        raise ValueError("no image of the source series was found")
    if any(int(ds.get("NumberOfFrames", 1) or 1) > 1 for ds in images):
        raise ValueError("multi-frame source images are not supported for SEG output")
    first = frame_geometry(images[0])
    normal = np.cross(first.row_cosine, first.column_cosine)
    return sorted(images, key=lambda ds: float(frame_geometry(ds).position @ normal))


def build_segmentation(
    sources: Sequence[Dataset],
    labels: npt.NDArray[np.integer[Any]],
    affine: npt.ArrayLike,
    segments: Sequence[Segment],
    analysis: Analysis,
    *,
    series_number: int,
    description: str,
    segmentation_type: SegmentationType = DEFAULT_SEGMENTATION_TYPE,
) -> hd.seg.Segmentation:
    """A SEG of `labels` (a label map in RAS+ world space, `affine`) on the source images' frames
    (`sources`, from `source_images`); each label value that a segment names becomes that
    segment, any other value is background."""
    frames = labels_on_frames(np.asarray(labels), affine, [frame_geometry(ds) for ds in sources])
    lookup = np.zeros(int(max(int(frames.max()), *(s.label for s in segments))) + 1, dtype=np.uint16)
    for segment in segments:
        lookup[segment.label] = segment.number
    numbered = lookup[frames]
    dtype = np.uint8 if len(segments) < 256 else np.uint16
    segmentation = hd.seg.Segmentation(
        source_images=list(sources),
        pixel_array=numbered.astype(dtype),
        segmentation_type=hd.seg.SegmentationTypeValues(segmentation_type.value),
        segment_descriptions=[_description(s, analysis) for s in segments],
        series_instance_uid=hd.UID(),
        series_number=series_number,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer=MANUFACTURER,
        manufacturer_model_name=MODEL,
        software_versions=software_versions(),
        device_serial_number=DEVICE_SERIAL,
        content_description=description[:64],
        content_label=analysis.name.upper().replace("-", "_")[:16],
    )
    on_source_timeline(segmentation, sources[0])
    return segmentation
