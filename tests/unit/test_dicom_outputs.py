"""DICOM outputs (voxelpipe.dicom_outputs, pipeline.dicom_outputs): SEG, SR TID 1500, Encapsulated PDF.

The SEG's labels are proved against the source frames independently of the geometry code: the
label map is a function of the assembled volume's values (value mod N), so each SEG frame read
back with highdicom must equal that function of the source frame's own stored pixels.
"""

from __future__ import annotations

import io
from datetime import UTC, datetime

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.sr.codedict import codes
from pydicom.uid import Comprehensive3DSRStorage, EncapsulatedPDFStorage, SegmentationStorage

from tests.fakes import InMemoryStorage
from tests.fixtures.dicom import oblique
from tests.fixtures.dicom_outputs import PDF, STUDY_ID, dataset_bytes, deidentified_series
from voxelpipe.dicom import assemble_series
from voxelpipe.dicom_outputs import (
    Analysis,
    SegmentationType,
    SegmentReferences,
    build_encapsulated_pdf,
    build_measurement_report,
    build_segmentation,
    region_segments,
    source_images,
    tissue_segments,
)
from voxelpipe.keys import derived_key, report_pdf_key
from voxelpipe.messages import AnalysisResult, FinalizeInput, PreparedVolume
from voxelpipe.nifti import load_nifti, to_nifti_bytes
from voxelpipe.pipeline.dicom_outputs import write_dicom_outputs
from voxelpipe.records import StudyRecord
from voxelpipe.volume import new_image

# highdicom warns that a pseudonym is a one-component person name: that is what it is.
pytestmark = pytest.mark.filterwarnings("ignore:The string .* person name:UserWarning")


CASES = {
    "axial": ("axial", True),
    "sagittal": ("sagittal", True),
    "oblique": (oblique(), True),
    "oblique-native-grid": (oblique(), False),  # a label map left on the acquisition's grid
}


@pytest.fixture(scope="module", params=list(CASES))
def series_case(request):
    orientation, canonical = CASES[request.param]
    copies, datasets, series_uid = deidentified_series(orientation)
    volume = assemble_series(copies, canonical=canonical)
    return datasets, series_uid, volume.image


@pytest.mark.parametrize("kind", list(SegmentationType))
@pytest.mark.parametrize(("segments", "modulus"), [(tissue_segments, 4), (region_segments, 23)])
def test_seg_frames_hold_the_label_map_voxel_for_voxel(series_case, kind, segments, modulus):
    datasets, series_uid, image = series_case
    values = np.asarray(image.dataobj).astype(np.int64)
    labels = (values % modulus).astype(np.uint8)
    # Through a NIfTI file, as tissue-seg's labels.nii.gz reaches Finalize.
    stored = new_image(labels, image.affine)
    loaded = load_nifti(to_nifti_bytes(stored, compress=True))
    sources = source_images(datasets, series_uid)
    seg = build_segmentation(
        sources,
        np.asarray(loaded.dataobj),
        loaded.affine,
        segments(),
        Analysis("tissue-seg", "1.3"),
        series_number=901,
        description="test",
        segmentation_type=kind,
    )
    back = hd.seg.segread(io.BytesIO(dataset_bytes(seg)))
    assert back.SegmentationType == kind.value
    uids = [ds.SOPInstanceUID for ds in sources]
    frames = back.get_pixels_by_source_instance(uids, combine_segments=True)
    expected = np.stack([ds.pixel_array.astype(np.int64) % modulus for ds in sources])
    assert np.array_equal(frames, expected)
    # Every voxel of the label map is in exactly one SEG pixel: the same counts per label.
    assert np.array_equal(
        np.bincount(frames.ravel(), minlength=modulus), np.bincount(labels.ravel(), minlength=modulus)
    )


def test_segments_carry_snomed_codes_sides_and_the_algorithm(series_case):
    datasets, series_uid, image = series_case
    sources = source_images(datasets, series_uid)
    labels = np.zeros(image.shape, dtype=np.uint8)
    seg = build_segmentation(
        sources,
        labels,
        image.affine,
        region_segments(),
        Analysis("regional", "2.1"),
        series_number=902,
        description="r",
    )
    hippocampus = next(s for s in seg.SegmentSequence if s.SegmentLabel == "Left hippocampus")
    assert hippocampus.SegmentedPropertyTypeCodeSequence[0].CodeValue == codes.SCT.Hippocampus.value
    modifier = hippocampus.SegmentedPropertyTypeCodeSequence[0].SegmentedPropertyTypeModifierCodeSequence[0]
    assert modifier.CodeValue == codes.SCT.Left.value
    assert (
        hippocampus.SegmentedPropertyCategoryCodeSequence[0].CodeValue == codes.SCT.AnatomicalStructure.value
    )
    algorithm = hippocampus.SegmentationAlgorithmIdentificationSequence[0]
    assert (algorithm.AlgorithmName, algorithm.AlgorithmVersion) == ("voxelpipe regional", "2.1")
    tissue = build_segmentation(
        sources,
        labels,
        image.affine,
        tissue_segments(),
        Analysis("tissue-seg", "1"),
        series_number=901,
        description="t",
    )
    types = {s.SegmentLabel: s.SegmentedPropertyTypeCodeSequence[0].CodeValue for s in tissue.SegmentSequence}
    assert types == {
        "CSF": codes.SCT.CerebrospinalFluid.value,
        "Grey matter": codes.SCT.GrayMatter.value,
        "White matter": codes.SCT.WhiteMatter.value,
    }


DOCUMENT = {
    "analyses": {
        "volumetrics": {
            "version": "1.2",
            "measures": {"gm_ml": 601.5, "wm_ml": 450.25, "csf_ml": 201.0, "tiv_ml": 1252.75},
        },
        "regional": {
            "version": "2.0",
            "measures": {
                "regions": {
                    "hippocampus_left": {"volume_ml": 3.5, "label_ml": 4.25},
                    "hippocampus_right": {"volume_ml": 3.75, "label_ml": 4.5},
                },
                "structures": {"hippocampus": {"total_ml": 7.25, "asymmetry": -0.07}},
            },
        },
        "normative": {
            "version": "1.1",
            "measures": {
                "status": "ok",
                "scores": {
                    "gm_ml": {"status": "ok", "value": 601.5, "z": -1.25, "percentile": 10.565},
                    "tiv_ml": {"status": "no_reference_row", "value": 1252.75},
                    "hippocampus_left": {"status": "ok", "value": 3.5, "z": 0.5, "percentile": 69.146},
                },
            },
        },
    }
}


def _values(group) -> dict[tuple[str, str | None], tuple[float, str, str]]:
    out = {}
    for m in group.get_measurements():
        method = m.method.value if m.method is not None else None
        out[(m.name.value, method)] = (float(m.value), m.unit.value)
    return out


def test_sr_holds_every_volume_z_score_and_centile_referencing_the_segments():
    _, datasets, series_uid = deidentified_series("axial")
    sources = source_images(datasets, series_uid)
    image = assemble_series([dataset_bytes(d) for d in sources]).image
    labels = np.zeros(image.shape, dtype=np.uint8)
    tissue = build_segmentation(
        sources,
        labels,
        image.affine,
        tissue_segments(),
        Analysis("tissue-seg", "1"),
        series_number=901,
        description="t",
    )
    regions = build_segmentation(
        sources,
        labels,
        image.affine,
        region_segments(),
        Analysis("regional", "2.0"),
        series_number=902,
        description="r",
    )
    refs = [SegmentReferences.of(tissue, tissue_segments()), SegmentReferences.of(regions, region_segments())]
    sr = build_measurement_report(DOCUMENT, [tissue, regions, *sources], refs, series_number=903)
    back = hd.sr.srread(io.BytesIO(dataset_bytes(sr)))
    assert back.SOPClassUID == Comprehensive3DSRStorage
    assert back.ConceptNameCodeSequence[0].CodeValue == codes.DCM.ImagingMeasurementReport.value
    volume, z, centile = (
        codes.SCT.Volume.value,
        codes.DCM.ZScoreOfMeasurement.value,
        codes.DCM.PercentileRankingOfMeasurement.value,
    )
    summed = codes.DCM.SumOfSegmentedVoxelMethodForVolume.value
    roi = {
        g.tracking_identifier.split("(")[-1].rstrip(")"): g
        for g in back.content.get_volumetric_roi_measurement_groups()
    }
    assert set(roi) == {"gm", "wm", "csf", "hippocampus_left", "hippocampus_right"}
    assert _values(roi["gm"]) == {
        (volume, None): (601.5, "ml"),
        (z, None): (-1.25, "1"),
        (centile, None): (10.565, "%"),
    }
    assert _values(roi["wm"]) == {(volume, None): (450.25, "ml")}
    assert _values(roi["hippocampus_left"]) == {
        (volume, None): (3.5, "ml"),
        (volume, summed): (4.25, "ml"),
        (z, None): (0.5, "1"),
        (centile, None): (69.146, "%"),
    }
    gm_ref = roi["gm"].referenced_segment
    assert gm_ref.referenced_sop_instance_uid == tissue.SOPInstanceUID
    assert gm_ref.referenced_segment_numbers == [2]
    left_ref = roi["hippocampus_left"].referenced_segment
    assert left_ref.referenced_sop_instance_uid == regions.SOPInstanceUID
    # The volumes without a segment of their own: TID 1501 groups, found by their tracking identifier.
    plain = {
        text: values
        for text, values in _groups(back).items()
        if text.endswith(("(tiv)", "(hippocampus_total)"))
    }
    assert plain == {
        "Total intracranial volume (tiv)": [(volume, 1252.75, "ml")],
        "hippocampus (left + right) (hippocampus_total)": [(volume, 7.25, "ml")],
    }
    algorithms = {
        item.TextValue
        for item in _walk(back.ContentSequence)
        if item.ConceptNameCodeSequence[0].CodeValue == "111001"  # Algorithm Name
    }
    assert algorithms == {"voxelpipe volumetrics", "voxelpipe regional", "voxelpipe normative"}


def _groups(sr) -> dict[str, list[tuple[str, float, str]]]:
    """Every measurement group of the SR: tracking identifier -> its numeric items."""
    found = {}
    for item in _walk(sr.ContentSequence):
        if item.ValueType != "CONTAINER" or item.ConceptNameCodeSequence[0].CodeValue != "125007":
            continue
        children = list(item.ContentSequence)
        text = next(c.TextValue for c in children if c.ConceptNameCodeSequence[0].CodeValue == "112039")
        found[text] = [
            (
                c.ConceptNameCodeSequence[0].CodeValue,
                float(c.MeasuredValueSequence[0].NumericValue),
                c.MeasuredValueSequence[0].MeasurementUnitsCodeSequence[0].CodeValue,
            )
            for c in children
            if c.ValueType == "NUM"
        ]
    return found


def _walk(sequence):
    for item in sequence:
        yield item
        if "ContentSequence" in item:
            yield from _walk(item.ContentSequence)


def test_encapsulated_pdf_round_trips_in_the_deidentified_study():
    _, datasets, _ = deidentified_series("axial")
    document = build_encapsulated_pdf(PDF, datasets[0], series_number=904)
    back = pydicom.dcmread(io.BytesIO(dataset_bytes(document)))
    assert back.SOPClassUID == EncapsulatedPDFStorage
    assert back.EncapsulatedDocument[: len(PDF)] == PDF and back.EncapsulatedDocumentLength == len(PDF)
    assert back.MIMETypeOfEncapsulatedDocument == "application/pdf"
    assert (back.StudyInstanceUID, back.PatientID, str(back.PatientName)) == (
        datasets[0].StudyInstanceUID,
        datasets[0].PatientID,
        str(datasets[0].PatientName),
    )
    assert back.Manufacturer == "voxelpipe" and back.SeriesInstanceUID != datasets[0].SeriesInstanceUID
    with pytest.raises(ValueError, match="not a PDF"):
        build_encapsulated_pdf(b"<html>", datasets[0], series_number=904)


# --- the use case --------------------------------------------------------------------------------


def _state(artifacts: dict[str, list[str]]) -> FinalizeInput:
    prepared = PreparedVolume(
        volume_key="work/x/canonical.nii",
        original_orientation=("R", "A", "S"),
        original_shape=[10, 12, 5],
        original_affine=np.eye(4).tolist(),
        shape=[10, 12, 5],
        voxel_size_mm=[1.0, 1.0, 1.0],
        duration_ms=1.0,
    )
    results = [
        AnalysisResult(
            analysis=name, version="1", parameters={}, measures={}, artifacts=keys, duration_ms=1.0
        )
        for name, keys in artifacts.items()
    ]
    return FinalizeInput(
        study_id=STUDY_ID,
        attempt=1,
        tenant="t1",
        input_key="uploads/t1/x/",
        analyses=[],
        prepared=prepared,
        analysis_results=[results],
    )


@pytest.fixture(scope="module")
def stored_study():
    copies, datasets, series_uid = deidentified_series("sagittal")
    other, _, _ = deidentified_series("axial", seed=3)  # another series of the exam: not a source
    storage = InMemoryStorage()
    for data in [*copies, *other]:
        sop = pydicom.dcmread(io.BytesIO(data)).SOPInstanceUID
        storage.write(derived_key(STUDY_ID, f"dicom/{sop}.dcm"), data, "application/dicom")
    image = assemble_series(copies).image
    labels = (np.asarray(image.dataobj).astype(np.int64) % 4).astype(np.uint8)
    labels_key = derived_key(STUDY_ID, "tissue-seg", "labels.nii.gz")
    storage.write(labels_key, to_nifti_bytes(new_image(labels, image.affine), compress=True))
    storage.write(report_pdf_key(STUDY_ID), PDF, "application/pdf")
    study = StudyRecord(STUDY_ID, tenant="t1", input_format="dicom", series_uid=series_uid)
    return storage, study, labels_key, datasets


def test_finalize_writes_seg_sr_and_pdf_beside_the_source_and_replaces_them_on_a_rerun(stored_study):
    storage, study, labels_key, datasets = stored_study
    state = _state({"tissue-seg": [labels_key], "volumetrics": []})
    document = {
        "analyses": {
            "volumetrics": {
                "version": "1",
                "measures": {"gm_ml": 1.5, "wm_ml": 2.0, "csf_ml": 0.5, "tiv_ml": 4.0},
            }
        },
        "report": {"pdf": {"status": "available", "key": report_pdf_key(STUDY_ID)}},
    }
    before = set(storage.list_keys(derived_key(STUDY_ID, "dicom/")))
    records = write_dicom_outputs(state, study, document, storage)
    assert [(r["kind"], r["content"], r["status"]) for r in records] == [
        ("SEG", "tissue", "available"),
        ("SR", "measurements", "available"),
        ("PDF", "report", "available"),
    ]
    classes = {"SEG": SegmentationStorage, "SR": Comprehensive3DSRStorage, "PDF": EncapsulatedPDFStorage}
    for record in records:
        assert record["key"] == derived_key(STUDY_ID, f"dicom/{record['sop_instance_uid']}.dcm")
        written = pydicom.dcmread(io.BytesIO(storage.read(record["key"])))
        assert written.SOPClassUID == record["sop_class_uid"] == classes[record["kind"]]
        assert written.SeriesInstanceUID == record["series_instance_uid"]
        # Identifiers from the de-identified source only.
        assert written.StudyInstanceUID == datasets[0].StudyInstanceUID
        assert (written.PatientID, str(written.PatientName)) == (
            datasets[0].PatientID,
            str(datasets[0].PatientName),
        )
        assert written.Manufacturer == "voxelpipe"
        # Dated as the de-identified source is: the real date would give a date shift away.
        today = datetime.now(UTC).strftime("%Y%m%d")
        stamped = {str(e.value) for e in written.iterall() if e.VR in ("DA", "DT") and e.value}
        assert stamped and not [value for value in stamped if today in value], stamped
    seg = hd.seg.segread(io.BytesIO(storage.read(records[0]["key"])))
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == study.series_uid
    # A rerun replaces the outputs: the source copies stay, the earlier outputs go.
    again = write_dicom_outputs(state, study, document, storage)
    after = set(storage.list_keys(derived_key(STUDY_ID, "dicom/")))
    assert after == before | {r["key"] for r in again}
    assert not {r["key"] for r in records} & after


def test_an_output_that_cannot_be_made_is_recorded_unavailable(stored_study):
    storage, study, labels_key, _ = stored_study
    state = _state({"tissue-seg": [labels_key]})
    missing_series = replace_series(study, "2.25.1")
    records = write_dicom_outputs(state, missing_series, {"analyses": {}, "report": {}}, storage)
    assert [(r["kind"], r["status"]) for r in records] == [("SEG", "unavailable"), ("SR", "unavailable")]
    assert all("no image of the source series" in r["error"] for r in records)
    # No measures: the SEG is written, the SR is not (and says why).
    records = write_dicom_outputs(state, study, {"analyses": {}, "report": {}}, storage)
    assert [(r["kind"], r["status"]) for r in records] == [("SEG", "available"), ("SR", "unavailable")]
    assert "no volume" in records[1]["error"]
    assert write_dicom_outputs(state, StudyRecord(STUDY_ID, tenant="t1"), {}, storage) is None  # NIfTI


def replace_series(study: StudyRecord, series_uid: str) -> StudyRecord:
    return StudyRecord(study.study_id, tenant=study.tenant, input_format="dicom", series_uid=series_uid)


def test_the_seg_type_setting_chooses_labelmap_and_refuses_what_it_does_not_know(stored_study, monkeypatch):
    storage, study, labels_key, _ = stored_study
    state = _state({"tissue-seg": [labels_key]})
    monkeypatch.setenv("VOXELPIPE_DICOM_SEG_TYPE", "labelmap")
    (seg, _) = write_dicom_outputs(state, study, {"analyses": {}, "report": {}}, storage)
    assert pydicom.dcmread(io.BytesIO(storage.read(seg["key"]))).SegmentationType == "LABELMAP"
    monkeypatch.setenv("VOXELPIPE_DICOM_SEG_TYPE", "FRACTIONAL")
    (seg, _) = write_dicom_outputs(state, study, {"analyses": {}, "report": {}}, storage)
    assert seg["status"] == "unavailable" and "FRACTIONAL" in seg["error"]
