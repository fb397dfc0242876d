"""voxelpipe.routing: series classification on realistic tag sets, and routing tags read from
DICOM headers (synthetic series, pydicom's test files) without their pixels."""

from __future__ import annotations

from typing import Any

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from tests.fixtures.dicom import make_enhanced, make_series, to_bytes
from voxelpipe.rejections import ReasonCode, Rejected
from voxelpipe.routing import SeriesClass, classify, classify_series, read_routing_tags

MR = {"Modality": "MR", "ImageType": ["ORIGINAL", "PRIMARY", "M", "ND"]}

CASES: list[tuple[str, dict[str, Any], SeriesClass]] = [
    (
        "siemens-mprage",
        {
            **MR,
            "ScanningSequence": ["GR", "IR"],
            "SequenceVariant": ["SK", "SP", "MP"],
            "ScanOptions": ["IR"],
            "SequenceName": "*tfl3d1_16ns",
            "MRAcquisitionType": "3D",
            "RepetitionTime": 2300.0,
            "EchoTime": 2.98,
            "InversionTime": 900.0,
        },
        SeriesClass.T1,
    ),
    (
        "ge-bravo",
        {
            **MR,
            "ScanningSequence": ["GR"],
            "SequenceVariant": ["SS", "SK"],
            "ScanOptions": ["FAST_GEMS", "EDR_GEMS", "FILTERED_GEMS", "ACC_GEMS"],
            "MRAcquisitionType": "3D",
            "RepetitionTime": 8.2,
            "EchoTime": 3.2,
            "InversionTime": 450.0,
        },
        SeriesClass.T1,
    ),
    (
        "ge-spgr",
        {
            **MR,
            "ScanningSequence": ["GR"],
            "SequenceVariant": ["SS", "SP", "SK"],
            "MRAcquisitionType": "3D",
            "RepetitionTime": 7.5,
            "EchoTime": 3.0,
        },
        SeriesClass.T1,
    ),
    (
        "se-t1",
        {**MR, "ScanningSequence": ["SE"], "RepetitionTime": 550.0, "EchoTime": 12.0},
        SeriesClass.T1,
    ),
    (
        "tse-t2",
        {
            **MR,
            "ScanningSequence": ["SE"],
            "SequenceVariant": ["SK", "SP"],
            "SequenceName": "*tse2d1_15",
            "MRAcquisitionType": "2D",
            "RepetitionTime": 6000.0,
            "EchoTime": 95.0,
        },
        SeriesClass.T2,
    ),
    (
        "flair-2d",
        {
            **MR,
            "ScanningSequence": ["SE", "IR"],
            "RepetitionTime": 9000.0,
            "EchoTime": 81.0,
            "InversionTime": 2500.0,
        },
        SeriesClass.FLAIR,
    ),
    (
        "flair-3d-space",
        {
            **MR,
            "ScanningSequence": ["SE", "IR"],
            "RepetitionTime": 5000.0,
            "EchoTime": 387.0,
            "InversionTime": 1800.0,
        },
        SeriesClass.FLAIR,
    ),
    (
        "pd-tse",
        {**MR, "ScanningSequence": ["SE"], "RepetitionTime": 3000.0, "EchoTime": 12.0},
        SeriesClass.PD,
    ),
    (
        "siemens-dwi",
        {
            "Modality": "MR",
            "ImageType": ["ORIGINAL", "PRIMARY", "DIFFUSION", "NONE", "ND"],
            "ScanningSequence": ["EP"],
            "SequenceName": "*ep_b1000t",
            "RepetitionTime": 5300.0,
            "EchoTime": 88.0,
        },
        SeriesClass.DWI,
    ),
    (
        "dwi-by-bvalue",
        {
            **MR,
            "ScanningSequence": ["EP"],
            "DiffusionBValue": 0.0,
            "RepetitionTime": 5300.0,
            "EchoTime": 88.0,
        },
        SeriesClass.DWI,
    ),
    (
        "bold-epi",
        {**MR, "ScanningSequence": ["EP"], "RepetitionTime": 2000.0, "EchoTime": 30.0},
        SeriesClass.OTHER,
    ),
    (
        "localizer",
        {
            "Modality": "MR",
            "ImageType": ["ORIGINAL", "PRIMARY", "LOCALIZER"],
            "ScanningSequence": ["GR"],
            "RepetitionTime": 8.6,
            "EchoTime": 4.0,
        },
        SeriesClass.LOCALIZER,
    ),
    (
        "ct-scout",
        {"Modality": "CT", "ImageType": ["ORIGINAL", "PRIMARY", "LOCALIZER"], "KVP": 120.0},
        SeriesClass.LOCALIZER,
    ),
    (
        "derived-mpr",
        {
            **MR,
            "ImageType": ["DERIVED", "SECONDARY", "MPR"],
            "ScanningSequence": ["GR", "IR"],
            "RepetitionTime": 2300.0,
            "EchoTime": 2.98,
            "InversionTime": 900.0,
        },
        SeriesClass.DERIVED,
    ),
    ("adc-map", {**MR, "ImageType": ["DERIVED", "PRIMARY", "DIFFUSION", "ADC"]}, SeriesClass.DERIVED),
    ("ct", {"Modality": "CT", "ImageType": ["ORIGINAL", "PRIMARY", "AXIAL"], "KVP": 120.0}, SeriesClass.CT),
    ("pet", {"Modality": "PT", "ImageType": ["ORIGINAL", "PRIMARY"]}, SeriesClass.OTHER),
    (
        "stir",
        {
            **MR,
            "ScanningSequence": ["SE", "IR"],
            "RepetitionTime": 5000.0,
            "EchoTime": 50.0,
            "InversionTime": 160.0,
        },
        SeriesClass.OTHER,
    ),
    (
        "phase",
        {
            "Modality": "MR",
            "ImageType": ["ORIGINAL", "PRIMARY", "P", "ND"],
            "ScanningSequence": ["GR"],
            "RepetitionTime": 30.0,
            "EchoTime": 5.0,
        },
        SeriesClass.OTHER,
    ),
    (
        "t2star-gre",
        {**MR, "ScanningSequence": ["GR"], "RepetitionTime": 600.0, "EchoTime": 20.0},
        SeriesClass.OTHER,
    ),
    (
        "tof",
        {
            **MR,
            "ScanningSequence": ["GR"],
            "SequenceVariant": ["SP", "TOF"],
            "RepetitionTime": 22.0,
            "EchoTime": 3.6,
        },
        SeriesClass.OTHER,
    ),
    ("enhanced-t1", {**MR, "AcquisitionContrast": "T1"}, SeriesClass.T1),
    ("enhanced-flair", {**MR, "AcquisitionContrast": "FLUID_ATTENUATED"}, SeriesClass.FLAIR),
    ("enhanced-t2star", {**MR, "AcquisitionContrast": "T2_STAR"}, SeriesClass.OTHER),
    # Description only as a last resort: where the parameters are missing or inconclusive
    ("described-t1", {**MR, "SeriesDescription": "t1_mprage_sag_p2"}, SeriesClass.T1),
    ("described-flair", {**MR, "ProtocolName": "AX T2_FLAIR"}, SeriesClass.FLAIR),
    ("described-t2star", {**MR, "SeriesDescription": "T2* hemo"}, SeriesClass.OTHER),
    (
        "described-scout",
        {**MR, "SeriesDescription": "AAHead_Scout", "SeriesInstances": 3},
        SeriesClass.LOCALIZER,
    ),
    ("long-scout", {**MR, "SeriesDescription": "survey", "SeriesInstances": 120}, SeriesClass.OTHER),
    (
        "inconclusive-timing-then-text",
        {**MR, "RepetitionTime": 2300.0, "EchoTime": 2.98, "SeriesDescription": "T1 MPRAGE"},
        SeriesClass.T1,
    ),
    (
        "parameters-overrule-text",
        {
            **MR,
            "ScanningSequence": ["SE"],
            "RepetitionTime": 6000.0,
            "EchoTime": 95.0,
            "SeriesDescription": "T1",
        },
        SeriesClass.T2,
    ),
    ("nothing", {}, SeriesClass.OTHER),
]


@pytest.mark.parametrize(("tags", "expected"), [(t, e) for _, t, e in CASES], ids=[n for n, _, _ in CASES])
def test_classification(tags, expected):
    assert classify_series(tags) is expected


def test_a_description_decision_never_quotes_it():
    found = classify({**MR, "SeriesDescription": "t1 for Doe"})
    assert (
        found.series_class is SeriesClass.T1
        and "Doe" not in found.reason
        and "SeriesDescription" in found.reason
    )


def test_routing_tags_of_a_synthetic_series_without_reading_pixels():
    series = make_series(n_slices=2, rows=8, cols=8)
    tags = read_routing_tags(series.instances[0])
    assert tags["Modality"] == "MR" and tags["ImageType"] == ["ORIGINAL", "PRIMARY", "M", "ND"]
    assert tags["RepetitionTime"] == 2300.0 and tags["EchoTime"] == 2.98 and tags["SeriesNumber"] == 3
    assert tags["SeriesDescription"] == "T1 MPRAGE Doe"  # read (rules may test it), never stored: see decide
    assert "PatientName" not in tags and "PixelData" not in tags
    assert classify_series({**tags, "SeriesInstances": 2}) is SeriesClass.T1  # by description, last resort
    header = pydicom.dcmread(__import__("io").BytesIO(series.instances[0]), stop_before_pixels=True)
    del header.PatientName
    assert read_routing_tags(to_bytes(header))["Rows"] == 8  # a header alone is enough


def test_routing_tags_of_pydicom_test_files():
    mr = read_routing_tags(open(get_testdata_file("MR_small.dcm"), "rb").read())  # noqa: SIM115
    assert mr["ScanningSequence"] == ["SE"] and mr["MRAcquisitionType"] == "3D" and mr["EchoTime"] == 240.0
    assert classify_series(mr) is SeriesClass.DERIVED  # its ImageType is DERIVED\SECONDARY\OTHER
    ct = read_routing_tags(open(get_testdata_file("CT_small.dcm"), "rb").read())  # noqa: SIM115
    assert ct["Modality"] == "CT" and ct["KVP"] == 120.0 and ct["ConvolutionKernel"] == ["STANDARD"]
    assert classify_series(ct) is SeriesClass.CT


def test_enhanced_mr_times_come_from_the_shared_functional_groups():
    def timing(ds: Dataset) -> None:
        ds.AcquisitionContrast = "UNKNOWN"
        ds.ScanningSequence = ["GR", "IR"]
        timing_group, echo, modifier = Dataset(), Dataset(), Dataset()
        timing_group.RepetitionTime = 2300.0
        echo.EffectiveEchoTime = 2.98
        modifier.InversionTimes = [900.0]
        shared = ds.SharedFunctionalGroupsSequence[0]
        shared.MRTimingAndRelatedParametersSequence = Sequence([timing_group])
        shared.MREchoSequence = Sequence([echo])
        shared.MRModifierSequence = Sequence([modifier])

    (instance,) = make_enhanced(n_frames=2, rows=8, cols=8, edit=timing).instances
    tags = read_routing_tags(instance)
    assert (tags["RepetitionTime"], tags["EchoTime"], tags["InversionTime"]) == (2300.0, 2.98, 900.0)
    assert tags["NumberOfFrames"] == 2
    assert classify_series(tags) is SeriesClass.T1


@pytest.mark.parametrize("data", [b"", b"not dicom at all" * 20, b"\x00" * 128 + b"DICM" + b"\xff" * 10])
def test_what_is_not_dicom_is_rejected_not_dicom(data):
    with pytest.raises(Rejected) as caught:
        read_routing_tags(data)
    assert caught.value.reason is ReasonCode.NOT_DICOM
