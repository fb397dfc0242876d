"""voxelpipe.dicom.deidentify: nothing the Basic Profile removes or replaces survives."""

from __future__ import annotations

import io
import os
import re
from collections import Counter
from datetime import datetime, timedelta
from importlib import resources
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from tests.fixtures.dicom import PHI_MARKER, make_series, phi_dataset
from voxelpipe.dicom import (
    BASIC_PROFILE,
    DEIDENTIFICATION_METHOD,
    UidMap,
    assemble_series,
    deidentify,
    deidentify_bytes,
)
from voxelpipe.dicom.deidentify import PROFILE_EDITION, TABLE_FILE, action_for
from voxelpipe.rejections import ReasonCode, Rejected

KEY = b"k" * 32
UID_RE = re.compile(r"^2\.25\.(0|[1-9][0-9]*)$")
ACTIONS = {"X", "Z", "D", "U", "Z/D", "X/Z", "X/D", "X/Z/D", "X/Z/U*"}
EMPTY = (None, "", b"")


def all_elements(ds: Dataset):
    """Every data element, sequence items included."""
    for elem in ds:
        yield elem
        if elem.VR == "SQ":
            for item in elem.value:
                yield from all_elements(item)


def uids_in(value) -> list[str]:
    values = value if isinstance(value, (list, tuple, pydicom.multival.MultiValue)) else [value]
    return [str(v) for v in values if v not in EMPTY]


def assert_treated(tag: int, original, out: Dataset, uid_map: UidMap) -> None:
    """The attribute `tag` of the de-identified `out` obeys its Table E.1-1 action."""
    action = BASIC_PROFILE[tag]
    present = tag in out
    value = out[tag].value if present else None
    where = f"({tag >> 16:04X},{tag & 0xFFFF:04X}) {action}"
    if action == "X":
        assert not present, where
    elif action == "Z":
        assert not present or value in EMPTY or (out[tag].VR == "SQ" and len(value) == 0), where
    elif action == "U":
        assert present, where
        for old, new in zip(uids_in(original), uids_in(value), strict=True):
            assert new == uid_map(old) and new != old and UID_RE.match(new), where
    elif action == "X/Z/U*":
        # Kept (the references matter), every instance UID inside replaced.
        for item in value or []:
            for elem in all_elements(item):
                if elem.VR == "UI" and action_for(int(elem.tag)) == "U":
                    assert all(UID_RE.match(u) for u in uids_in(elem.value)), where
    else:  # D and the conditional codes: gone, empty, or a dummy -- never the original
        if present and value not in EMPTY:
            if out[tag].VR == "SQ":
                assert all(len(item) == 0 for item in value), where
            else:
                assert value != original, where
    if action == "D":
        assert present and value not in EMPTY, where


def test_table_is_the_standards_shape() -> None:
    """The shipped table file, loaded: the 2024b edition's 617 attributes (the repeating groups
    and private attributes are not rows) and a few rows checked against the standard."""
    assert TABLE_FILE == "ps3.15-2024b-table-e.1-1.csv" and PROFILE_EDITION == "2024b"
    assert (
        resources.files("voxelpipe.dicom").joinpath(TABLE_FILE).read_text().startswith("# DICOM PS3.15 2024b")
    )
    assert len(BASIC_PROFILE) == 617
    assert set(BASIC_PROFILE.values()) == ACTIONS
    assert Counter(BASIC_PROFILE.values()) == {
        "X": 380, "D": 92, "U": 54, "Z": 42, "X/D": 22, "X/Z": 11, "X/Z/D": 8, "Z/D": 6, "X/Z/U*": 2
    }  # fmt: skip
    spot = {
        0x00100010: "Z",  # Patient's Name
        0x00100020: "Z/D",  # Patient ID
        0x00100030: "Z",  # Patient's Birth Date
        0x00080018: "U",  # SOP Instance UID
        0x0020000D: "U",  # Study Instance UID
        0x00080080: "X/Z/D",  # Institution Name
        0x00081140: "X/Z/U*",  # Referenced Image Sequence
        0x0008103E: "X",  # Series Description
        0x00181030: "X/D",  # Protocol Name
        0x00080050: "Z",  # Accession Number
    }
    assert {tag: BASIC_PROFILE[tag] for tag in spot} == spot
    assert action_for(0x60003000) == action_for(0x501E0010) == "X"  # overlays, curves
    assert action_for(0x00280010) is None  # Rows: not listed, kept


def test_no_listed_attribute_survives() -> None:
    ds, originals = phi_dataset()
    uid_map = UidMap(KEY)
    out = deidentify(ds, uid_map)
    assert len(originals) > 450  # nearly the whole table is in the fixture
    for tag, original in originals.items():
        assert_treated(tag, original, out, uid_map)
    # Nothing identifying anywhere in the written object: no marker, no original UID.
    buffer = io.BytesIO()
    out.save_as(buffer, enforce_file_format=True)
    written = buffer.getvalue()
    assert PHI_MARKER.lower().encode() not in written.lower()
    for tag, original in originals.items():
        if BASIC_PROFILE[tag] == "U":
            for uid in uids_in(original):
                assert uid.encode() not in written
    assert not any(elem.tag.is_private for elem in all_elements(out))
    assert not any(elem.tag.group in (0x5000, 0x6000) for elem in out)
    assert 0xFFFCFFFC not in out


def test_profile_attributes_are_set() -> None:
    out = deidentify(phi_dataset()[0], UidMap(KEY))
    assert out.PatientIdentityRemoved == "YES"
    assert out.DeidentificationMethod == DEIDENTIFICATION_METHOD and len(DEIDENTIFICATION_METHOD) <= 64
    code = out.DeidentificationMethodCodeSequence[0]
    assert (code.CodeValue, code.CodingSchemeDesignator) == ("113100", "DCM")
    assert out.LongitudinalTemporalInformationModified == "REMOVED"
    assert out.file_meta.MediaStorageSOPInstanceUID == out.SOPInstanceUID
    assert "SourceApplicationEntityTitle" not in out.file_meta


def test_input_is_left_untouched() -> None:
    ds, _ = phi_dataset()
    before = io.BytesIO()
    ds.save_as(before, enforce_file_format=True)
    deidentify(ds, UidMap(KEY))
    after = io.BytesIO()
    ds.save_as(after, enforce_file_format=True)
    assert before.getvalue() == after.getvalue()


def test_uids_are_consistent_within_a_study_and_unlinkable_across() -> None:
    series = make_series(n_slices=5)
    secret = b"tenant-secret-0123456789"
    study_map = UidMap.for_study(secret, "study-1")
    outs = [pydicom.dcmread(io.BytesIO(deidentify_bytes(d, study_map))) for d in series.instances]
    assert len({o.StudyInstanceUID for o in outs}) == len({o.SeriesInstanceUID for o in outs}) == 1
    assert len({o.FrameOfReferenceUID for o in outs}) == 1
    assert len({o.SOPInstanceUID for o in outs}) == 5
    assert outs[0].SeriesInstanceUID == study_map(series.series_uid) != series.series_uid
    assert all(len(o.SOPInstanceUID) <= 64 and UID_RE.match(o.SOPInstanceUID) for o in outs)
    # A fresh map with the same key (another Lambda invocation) agrees; another study does not.
    assert UidMap.for_study(secret, "study-1")(series.series_uid) == outs[0].SeriesInstanceUID
    assert UidMap.for_study(secret, "study-2")(series.series_uid) != outs[0].SeriesInstanceUID


def test_deidentified_series_keeps_its_pixels_and_geometry() -> None:
    series = make_series(n_slices=5, compressed="rle")
    uid_map = UidMap(KEY)
    cleaned = [deidentify_bytes(d, uid_map, patient_pseudonym="SUBJ-001") for d in series.instances]
    for data in cleaned:
        assert PHI_MARKER.lower().encode() not in data.lower()
        ds = pydicom.dcmread(io.BytesIO(data))
        assert ds.PatientID == ds.PatientName == "SUBJ-001"
    before, after = assemble_series(series.instances), assemble_series(cleaned)
    np.testing.assert_array_equal(np.asanyarray(after.image.dataobj), np.asanyarray(before.image.dataobj))
    np.testing.assert_array_equal(after.image.affine, before.image.affine)


def test_burned_in_annotation_is_rejected_or_flagged() -> None:
    data = make_series(n_slices=1, burned_in="YES").instances[0]
    with pytest.raises(Rejected) as caught:
        deidentify_bytes(data, UidMap(KEY))
    assert caught.value.reason == ReasonCode.BURNED_IN_PHI
    flagged = pydicom.dcmread(io.BytesIO(deidentify_bytes(data, UidMap(KEY), burned_in="flag")))
    assert flagged.BurnedInAnnotation == "YES" and flagged.PatientIdentityRemoved == "YES"


def test_uid_map_rejects_short_keys() -> None:
    with pytest.raises(ValueError):
        UidMap(b"short")


# --- the corpus: every listed attribute, in real files that carry them --------------------------------

CORPUS = Path(pydicom.__file__).parent / "data" / "test_files"


def corpus_datasets():
    for path in sorted(CORPUS.rglob("*")):
        if not path.is_file() or path.stat().st_size < 132:
            continue
        try:
            ds = pydicom.dcmread(path)
        except Exception:
            continue  # not DICOM (json, txt...), or unreadable: the corpus test gives those verdicts
        if "DirectoryRecordSequence" in ds:
            continue  # a DICOMDIR: a media index, not an object we keep
        yield os.path.relpath(path, CORPUS), ds


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_corpus_files_keep_no_listed_attribute() -> None:
    uid_map = UidMap(KEY)
    checked = 0
    for name, ds in corpus_datasets():
        originals: dict[int, list] = {}
        for elem in all_elements(ds):
            if int(elem.tag) in BASIC_PROFILE and elem.VR != "SQ" and elem.value not in EMPTY:
                originals.setdefault(int(elem.tag), []).append(elem.value)
        out = deidentify(ds, uid_map, burned_in="flag")
        for tag in BASIC_PROFILE:
            if tag in ds:  # the top level, exactly as the table says
                assert_treated(tag, ds[tag].value, out, uid_map)
        for elem in all_elements(out):  # and in sequence items: never an original value
            assert elem.value not in originals.get(int(elem.tag), []), f"{name}: {elem.tag} survived"
        assert not any(elem.tag.is_private for elem in all_elements(out)), name
        checked += 1
    assert checked > 50


# -- PS3.15 "Retain Longitudinal Temporal Information with Modified Dates" ---------------------------

OFFSET = -1000  # days


def _shift(text: str) -> str:
    return (datetime.strptime(text[:8], "%Y%m%d") + timedelta(days=OFFSET)).strftime("%Y%m%d")


def test_modified_dates_shift_every_date_and_keep_no_original() -> None:
    ds, _ = phi_dataset()
    # Planted beside the table's own: a multi-valued DA, dates nested two sequences deep, a DT
    # with fraction and UTC offset, an unlisted date the Basic Profile would keep.
    ds.add_new(0x00181200, "DA", ["20230102", "20230203"])  # Date of Last Calibration (listed X)
    inner = Dataset()
    inner.ContentDate = "20230304"
    inner.FrameAcquisitionDateTime = "20230304101112.123456+0100"
    outer = Dataset()
    outer.FrameContentSequence = Sequence([inner])
    ds.SharedFunctionalGroupsSequence = Sequence([outer])
    ds.add_new(0x00143076, "DA", "20230405")  # Date of Gain Calibration: the Basic Profile keeps it
    ds.add_new(0x00211001, "DA", "20230506")  # private: removed with its kind
    originals = {str(e.value) for e in all_elements(ds) if e.VR in ("DA", "DT") and e.value not in EMPTY} | {
        "20230102",
        "20230203",
    }
    out = deidentify(ds, UidMap(KEY), date_offset_days=OFFSET)
    dates = [e for e in all_elements(out) if e.VR in ("DA", "DT") and e.value not in EMPTY]
    assert dates, "the dates were removed, not shifted"
    for elem in dates:
        values = [elem.value] if isinstance(elem.value, str) else list(elem.value)
        for value in values:
            assert re.fullmatch(r"\d{8}", value), (elem.keyword, value)  # a DT keeps only its date
            assert value not in originals and value[:8] not in {o[:8] for o in originals}, elem.keyword
    nested = out.SharedFunctionalGroupsSequence[0].FrameContentSequence[0]
    assert nested.ContentDate == _shift("20230304")
    assert nested.FrameAcquisitionDateTime == _shift("20230304")
    assert out[0x00143076].value == _shift("20230405")
    assert list(out[0x00181200].value) == [_shift("20230102"), _shift("20230203")]
    assert out.StudyDate == _shift(str(ds.StudyDate))
    assert out.PatientBirthDate in EMPTY  # still removed: an age, never a birth date
    # Times: left to the Basic Profile (Study Time Z, Acquisition Time X/Z).
    assert out.get("StudyTime") in EMPTY
    assert out.get("AcquisitionTime") in EMPTY


def test_modified_dates_are_said_in_the_method_and_its_codes() -> None:
    out = deidentify(phi_dataset()[0], UidMap(KEY), date_offset_days=OFFSET)
    assert out.LongitudinalTemporalInformationModified == "MODIFIED"
    codes = [(c.CodeValue, c.CodingSchemeDesignator) for c in out.DeidentificationMethodCodeSequence]
    assert codes == [("113100", "DCM"), ("113107", "DCM")]
    assert "modified dates" in out.DeidentificationMethod and len(out.DeidentificationMethod) <= 64
    assert out.PatientIdentityRemoved == "YES"
    # Without an offset, nothing changes: dates removed, the Basic Profile's code alone.
    plain = deidentify(phi_dataset()[0], UidMap(KEY))
    assert plain.LongitudinalTemporalInformationModified == "REMOVED"
    assert [c.CodeValue for c in plain.DeidentificationMethodCodeSequence] == ["113100"]
    assert plain.DeidentificationMethod == DEIDENTIFICATION_METHOD
    assert plain.StudyDate in EMPTY


@pytest.mark.parametrize(
    ("vr", "value"),
    [
        ("DA", "2023-01-02"),
        ("DA", "20231345"),
        ("DA", "2023"),
        ("DT", "2023"),
        ("DT", "202301"),
        ("DA", "00010101"),  # shifted out of the calendar
    ],
)
@pytest.mark.filterwarnings("ignore:Invalid value for VR")
def test_a_date_that_does_not_parse_is_treated_as_the_basic_profile_says(vr: str, value: str) -> None:
    ds, _ = phi_dataset()
    ds.StudyDate = value if vr == "DA" else "20230102"  # Z: emptied
    ds.AcquisitionDateTime = value if vr == "DT" else "20230102"  # X/D: a dummy
    ds.add_new(0x0008041F, "DT", value)  # Study Update DateTime: unlisted (kept), emptied when bad
    out = deidentify(ds, UidMap(KEY), date_offset_days=OFFSET)
    if vr == "DA":
        assert out.StudyDate in EMPTY
    else:
        assert out.AcquisitionDateTime == "19000101000000"
        assert out[0x0008041F].value in EMPTY


def test_an_offset_of_zero_is_refused() -> None:
    with pytest.raises(ValueError):
        deidentify(phi_dataset()[0], UidMap(KEY), date_offset_days=0)
