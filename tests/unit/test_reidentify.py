"""voxelpipe.dicom.reidentify: a de-identified object gets its originals back, and nothing else."""

from __future__ import annotations

import io

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import generate_uid

from tests.fixtures.dicom import PHI_MARKER, make_series
from voxelpipe.dicom import UidMap, deidentify_bytes
from voxelpipe.dicom.reidentify import capture_identities, reidentify
from voxelpipe.identities import PATIENT_KEYWORDS, STUDY_KEYWORDS, IdentityMap

UIDS = UidMap.for_study(b"s" * 32, "study-1")
PSEUDONYM = "subject-7"
MARKERS = ("PatientIdentityRemoved", "DeidentificationMethod", "DeidentificationMethodCodeSequence")


def _read(data: bytes) -> Dataset:
    return pydicom.dcmread(io.BytesIO(data), force=True)


def _ui_values(ds: Dataset) -> list[str]:
    values: list[str] = []
    for elem in ds.iterall():
        if elem.VR == "UI" and elem.value:
            values.extend([elem.value] if isinstance(elem.value, str) else list(elem.value))
    return values


@pytest.fixture(scope="module")
def exam() -> tuple[list[bytes], list[bytes], IdentityMap]:
    """A PHI-laden series, its de-identified copies, and the map captured from its originals."""
    originals = make_series(n_slices=3, rows=8, cols=8).instances
    copies = [deidentify_bytes(data, UIDS, patient_pseudonym=PSEUDONYM) for data in originals]
    identities = IdentityMap()
    for data in originals:
        identities = identities.merged(capture_identities(data, UIDS))
    return originals, copies, identities


def test_the_map_holds_every_uid_de_identification_replaced_and_the_original_modules(exam):
    originals, copies, identities = exam
    for original, copy in zip(originals, copies, strict=True):
        replaced = set(_ui_values(_read(copy))) - set(_ui_values(_read(original)))
        assert replaced and replaced <= identities.uids.keys()
    assert all(uid.startswith("2.25.") for uid in identities.uids)
    first = _read(originals[0])
    assert identities.patient["00100020"]["Value"] == [first.PatientID]
    assert PHI_MARKER in identities.patient["00100010"]["Value"][0]["Alphabetic"]
    assert identities.study["00080050"]["Value"] == [first.AccessionNumber]
    assert "00101002" in identities.patient  # Other Patient IDs Sequence


def test_a_de_identified_copy_re_identified_has_the_originals_identifiers_and_uids(exam):
    originals, copies, identities = exam
    for original_bytes, copy in zip(originals, copies, strict=True):
        original, restored = _read(original_bytes), reidentify(_read(copy), identities)
        for keyword in (
            "SOPInstanceUID",
            "SeriesInstanceUID",
            "StudyInstanceUID",
            "FrameOfReferenceUID",
            *PATIENT_KEYWORDS,
            *STUDY_KEYWORDS,
        ):
            if keyword in original:
                assert restored[keyword].value == original[keyword].value, keyword
            else:  # not in the original (Issuer of Patient ID): not made up either
                assert keyword not in restored or restored[keyword].value in (None, ""), keyword
        assert restored.file_meta.MediaStorageSOPInstanceUID == original.SOPInstanceUID
        assert (  # a reference within a sequence (X/Z/U*: kept, its UIDs replaced)
            restored.ReferencedImageSequence[0].ReferencedSOPInstanceUID
            == original.ReferencedImageSequence[0].ReferencedSOPInstanceUID
        )
        for marker in (
            "PatientIdentityRemoved",
            "DeidentificationMethod",
            "DeidentificationMethodCodeSequence",
        ):
            assert marker not in restored
        assert restored.SOPClassUID == original.SOPClassUID  # never replaced, never touched


def test_an_output_referencing_the_pseudonymous_series_gets_the_originals_and_keeps_its_own_uids(exam):
    originals, copies, identities = exam
    source = _read(copies[0])
    seg = Dataset()  # what a SEG made from the de-identified series carries
    seg.SOPClassUID = "1.2.840.10008.5.1.4.1.1.66.4"
    seg.SOPInstanceUID, seg.SeriesInstanceUID = generate_uid(), generate_uid()
    seg.StudyInstanceUID, seg.FrameOfReferenceUID = source.StudyInstanceUID, source.FrameOfReferenceUID
    seg.PatientName, seg.PatientID = PSEUDONYM, PSEUDONYM
    seg.PatientIdentityRemoved = "YES"
    instance = Dataset()
    instance.ReferencedSOPClassUID = source.SOPClassUID
    instance.ReferencedSOPInstanceUID = source.SOPInstanceUID
    series = Dataset()
    series.SeriesInstanceUID = source.SeriesInstanceUID
    series.ReferencedInstanceSequence = Sequence([instance])
    seg.ReferencedSeriesSequence = Sequence([series])
    frame = Dataset()
    derivation = Dataset()
    derivation.SourceImageSequence = Sequence([instance])
    frame.DerivationImageSequence = Sequence([derivation])
    seg.PerFrameFunctionalGroupsSequence = Sequence([frame])
    unknown = "2.25.12345"  # a 2.25 UID that is no pseudonym of this study
    seg.ReferencedPerformedProcedureStepSequence = Sequence([Dataset()])
    seg.ReferencedPerformedProcedureStepSequence[0].ReferencedSOPInstanceUID = unknown

    original = _read(originals[0])
    restored = reidentify(seg, identities)
    assert restored.StudyInstanceUID == original.StudyInstanceUID
    assert restored.FrameOfReferenceUID == original.FrameOfReferenceUID
    assert restored.ReferencedSeriesSequence[0].SeriesInstanceUID == original.SeriesInstanceUID
    referenced = restored.ReferencedSeriesSequence[0].ReferencedInstanceSequence[0]
    assert referenced.ReferencedSOPInstanceUID == original.SOPInstanceUID
    source_image = (
        restored.PerFrameFunctionalGroupsSequence[0].DerivationImageSequence[0].SourceImageSequence[0]
    )
    assert source_image.ReferencedSOPInstanceUID == original.SOPInstanceUID
    assert (restored.SOPInstanceUID, restored.SeriesInstanceUID) == (
        seg.SOPInstanceUID,
        seg.SeriesInstanceUID,
    )
    assert restored.ReferencedPerformedProcedureStepSequence[0].ReferencedSOPInstanceUID == unknown
    assert (restored.PatientName, restored.PatientID) == (original.PatientName, original.PatientID)
    assert "PatientIdentityRemoved" not in restored
    assert seg.PatientID == PSEUDONYM and seg.PatientIdentityRemoved == "YES"  # the input is untouched


def test_an_attribute_the_original_lacked_is_emptied_or_left_out():
    original = Dataset()
    original.StudyInstanceUID = generate_uid()
    original.PatientID = f"{PHI_MARKER}-1"
    identities = capture_identities(original, UIDS)
    assert identities.uids == {UIDS(original.StudyInstanceUID): original.StudyInstanceUID}
    output = Dataset()
    output.StudyInstanceUID = UIDS(original.StudyInstanceUID)
    output.PatientName, output.PatientID, output.StudyDescription = PSEUDONYM, PSEUDONYM, "dummy"
    restored = reidentify(output, identities)
    assert restored.PatientID == original.PatientID and restored.StudyInstanceUID == original.StudyInstanceUID
    assert restored.PatientName in (None, "") and "StudyDescription" not in restored
