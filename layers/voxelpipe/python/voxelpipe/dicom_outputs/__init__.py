"""DICOM outputs of a study built with highdicom: SEG, Comprehensive 3D SR (TID 1500), Encapsulated
PDF (docs/dicom-outputs.md). Pure: datasets, arrays and results.json in, pydicom datasets out."""

from voxelpipe.dicom_outputs.common import MANUFACTURER, Analysis
from voxelpipe.dicom_outputs.geometry import FrameGeometry, frame_geometry, labels_on_frame, labels_on_frames
from voxelpipe.dicom_outputs.pdf import build_encapsulated_pdf
from voxelpipe.dicom_outputs.seg import (
    DEFAULT_SEGMENTATION_TYPE,
    Segment,
    SegmentationType,
    build_segmentation,
    region_segments,
    source_images,
    tissue_segments,
)
from voxelpipe.dicom_outputs.sr import SegmentReferences, build_measurement_report, collect_measurements

__all__ = [
    "DEFAULT_SEGMENTATION_TYPE",
    "MANUFACTURER",
    "Analysis",
    "FrameGeometry",
    "Segment",
    "SegmentReferences",
    "SegmentationType",
    "build_encapsulated_pdf",
    "build_measurement_report",
    "build_segmentation",
    "collect_measurements",
    "frame_geometry",
    "labels_on_frame",
    "labels_on_frames",
    "region_segments",
    "source_images",
    "tissue_segments",
]
