"""A DICOM study's outputs through the local cloud: Finalize files a SEG, an SR (TID 1500) and the
report as Encapsulated PDF beside the de-identified source series (docs/dicom-outputs.md)."""

from __future__ import annotations

import gzip
import io
import json

import boto3
import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom
import pytest

from infra.local.cloud import LocalCloud
from infra.local.studies import submit_files, wait_for_terminal
from tests.fixtures.dicom import make_series
from voxelpipe.keys import derived_key, report_pdf_key, results_key
from voxelpipe.status import StudyStatus

pytestmark = pytest.mark.filterwarnings("ignore:The string .* person name:UserWarning")


def _read(cloud: LocalCloud, key: str) -> bytes:
    return boto3.client("s3").get_object(Bucket=cloud.bucket, Key=key)["Body"].read()


def test_a_dicom_study_gets_seg_sr_and_pdf_that_read_back(cloud: LocalCloud):
    series = make_series(n_slices=12, rows=32, cols=28, orientation="sagittal")
    files = [(f"im{number:04d}.dcm", data) for number, data in enumerate(series.instances)]
    study_id = submit_files(cloud, files, input_format="dicom", analyses=["qc", "tissue-seg", "volumetrics"])
    record = wait_for_terminal([study_id], timeout_s=180)[study_id]
    assert record.status == StudyStatus.COMPLETED, (record.reason_detail, record.error)
    document = json.loads(_read(cloud, results_key(study_id)))
    outputs = {entry["kind"]: entry for entry in document["dicom_outputs"]}
    assert {kind: entry["status"] for kind, entry in outputs.items()} == dict.fromkeys(
        ("SEG", "SR", "PDF"), "available"
    ), document["dicom_outputs"]

    # The SEG, read back with highdicom, is labels.nii.gz voxel for voxel: highdicom's volume
    # (LPS) turned to RAS and put in nibabel's canonical order, as the label map is.
    seg = hd.seg.segread(io.BytesIO(_read(cloud, outputs["SEG"]["key"])))
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == record.series_uid or record.series_uid is None
    volume = seg.get_volume(combine_segments=True)
    ras = nib.as_closest_canonical(
        nib.Nifti1Image(
            np.asarray(volume.array, dtype=np.uint8), np.diag([-1.0, -1.0, 1.0, 1.0]) @ volume.affine
        )
    )
    labels = nib.as_closest_canonical(
        nib.Nifti1Image.from_bytes(
            gzip.decompress(_read(cloud, derived_key(study_id, "tissue-seg", "labels.nii.gz")))
        )
    )
    # highdicom's volume spans the frames that hold a segment (empty frames are not stored): it is
    # a block of the label map's grid, the same axes and spacing, shifted by whole voxels.
    assert np.allclose(ras.affine[:3, :3], labels.affine[:3, :3], atol=1e-4)
    offset = np.linalg.inv(labels.affine) @ ras.affine[:, 3]
    start = np.rint(offset[:3]).astype(int)
    assert np.allclose(offset[:3], start, atol=1e-3) and (start >= 0).all()
    block = tuple(slice(int(a), int(a) + n) for a, n in zip(start, ras.shape, strict=True))
    expected = np.asarray(labels.dataobj)
    assert np.array_equal(np.asarray(ras.dataobj), expected[block])
    outside = expected.copy()
    outside[block] = 0
    assert not outside.any()  # nothing of the label map lies outside the SEG's frames
    assert len(np.unique(np.asarray(labels.dataobj))) > 1  # the comparison is not of empty maps

    # The SR's volumes are results.json's; the PDF is report.pdf.
    sr = hd.sr.srread(io.BytesIO(_read(cloud, outputs["SR"]["key"])))
    measures = document["analyses"]["volumetrics"]["measures"]
    found = {
        group.tracking_identifier.split("(")[-1].rstrip(")"): float(group.get_measurements()[0].value)
        for group in sr.content.get_volumetric_roi_measurement_groups()
    }
    assert found == {tissue: measures[f"{tissue}_ml"] for tissue in ("gm", "wm", "csf")}
    pdf = pydicom.dcmread(io.BytesIO(_read(cloud, outputs["PDF"]["key"])))
    report = _read(cloud, report_pdf_key(study_id))
    assert bytes(pdf.EncapsulatedDocument)[: len(report)] == report
    # Filed in the de-identified study, under its pseudonymous patient.
    listing = boto3.client("s3").list_objects_v2(Bucket=cloud.bucket, Prefix=derived_key(study_id, "dicom/"))
    written = {entry["key"] for entry in outputs.values()}
    source_key = next(item["Key"] for item in listing["Contents"] if item["Key"] not in written)
    source = pydicom.dcmread(io.BytesIO(_read(cloud, source_key)), stop_before_pixels=True)
    for output in (seg, sr, pdf):
        assert (output.StudyInstanceUID, output.PatientID) == (source.StudyInstanceUID, source.PatientID)
        assert output.Manufacturer == "voxelpipe"
