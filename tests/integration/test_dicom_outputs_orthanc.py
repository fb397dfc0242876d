"""The DICOM outputs against a real PACS: Orthanc (Debian's) stores the SEG (BINARY and LABELMAP),
the SR and the Encapsulated PDF, files them in the de-identified study, and serves the SEG's frames
back as highdicom reads them."""

from __future__ import annotations

import io
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.uid import Comprehensive3DSRStorage, EncapsulatedPDFStorage, SegmentationStorage

from tests.fixtures.dicom_outputs import PDF, dataset_bytes, deidentified_series
from tests.fixtures.orthanc import orthanc_server
from voxelpipe.dicom import assemble_series
from voxelpipe.dicom_outputs import (
    Analysis,
    SegmentationType,
    SegmentReferences,
    build_encapsulated_pdf,
    build_measurement_report,
    build_segmentation,
    source_images,
    tissue_segments,
)

pytestmark = pytest.mark.filterwarnings("ignore:The string .* person name:UserWarning")
LABEL_MAP_SEGMENTATION = "1.2.840.10008.5.1.4.1.1.66.7"
MEASURES = {"gm_ml": 1.5, "wm_ml": 2.25, "csf_ml": 0.5, "tiv_ml": 4.25}


def test_orthanc_files_the_outputs_in_the_deidentified_study(tmp_path: Path):
    copies, datasets, series_uid = deidentified_series("sagittal")
    sources = source_images(datasets, series_uid)
    image = assemble_series(copies).image
    labels = (np.asarray(image.dataobj).astype(np.int64) % 4).astype(np.uint8)
    segs = [
        build_segmentation(
            sources,
            labels,
            image.affine,
            tissue_segments(),
            Analysis("tissue-seg", "1"),
            series_number=901,
            description="tissue",
            segmentation_type=kind,
        )
        for kind in SegmentationType
    ]
    document = {"analyses": {"volumetrics": {"version": "1", "measures": MEASURES}}}
    sr = build_measurement_report(
        document, [segs[0], *sources], [SegmentReferences.of(segs[0], tissue_segments())], series_number=903
    )
    pdf = build_encapsulated_pdf(PDF, sources[0], series_number=904)
    outputs = [*segs, sr, pdf]
    with orthanc_server(tmp_path / "orthanc") as orthanc:
        for data in copies:
            orthanc.upload(data)
        stored = [orthanc.upload(dataset_bytes(output)) for output in outputs]
        assert [s["Status"] for s in stored] == ["Success"] * len(outputs)
        (study,) = orthanc.qido_studies(StudyInstanceUID=sources[0].StudyInstanceUID)
        assert study["00100020"]["Value"] == [sources[0].PatientID]
        response = orthanc.http.get(
            f"/dicom-web/studies/{sources[0].StudyInstanceUID}/instances",
            headers={"Accept": "application/dicom+json"},
        )
        classes = sorted(item["00080016"]["Value"][0] for item in response.json())
        assert SegmentationStorage in classes and LABEL_MAP_SEGMENTATION in classes
        assert Comprehensive3DSRStorage in classes and EncapsulatedPDFStorage in classes
        # The BINARY SEG as Orthanc serves it back still holds the labels, frame for frame.
        served = orthanc.http.get(f"/instances/{stored[0]['ID']}/file").content
    seg = hd.seg.segread(io.BytesIO(served))
    frames = seg.get_pixels_by_source_instance([ds.SOPInstanceUID for ds in sources], combine_segments=True)
    assert np.array_equal(frames, np.stack([ds.pixel_array.astype(np.int64) % 4 for ds in sources]))
    assert pydicom.dcmread(io.BytesIO(served)).SeriesInstanceUID == segs[0].SeriesInstanceUID
