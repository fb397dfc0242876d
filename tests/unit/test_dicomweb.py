"""DICOMweb documents (voxelpipe.dicom.web) and the CLI's DICOM folder selection, as pure logic."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydicom.dataset import Dataset

from infra.cli.dicom_upload import collect, describe, is_dicom_input, series_decisions
from tests.fixtures.dicom import make_series
from voxelpipe.dicom import web
from voxelpipe.rejections import ReasonCode


def test_multipart_related_round_trips_binary_parts():
    parts = [os.urandom(2000) + b"\r\n--boundary\r\n\r\r\n\n", b"\r\nend\r", b""]
    body, content_type = web.multipart_related([(p, "application/dicom") for p in parts])
    assert content_type.startswith('multipart/related; type="application/dicom"; boundary=')
    parsed = web.parse_multipart_related(content_type, body)
    assert [p.data for p in parsed] == parts and {p.content_type for p in parsed} == {"application/dicom"}


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("application/json", b"{}"),
        ("multipart/related", b"--x\r\n\r\nabc\r\n--x--"),  # no boundary
        ("multipart/related; boundary=other", b"--x\r\n\r\nabc\r\n--x--"),  # not the body's
    ],
)
def test_what_is_not_multipart_related_is_refused(content_type: str, body: bytes):
    with pytest.raises(web.InvalidMultipart):
        web.parse_multipart_related(content_type, body)


def test_failure_reasons_are_ps3_18_codes():
    assert web.failure_reason(ReasonCode.UNSUPPORTED_TRANSFER_SYNTAX) == 0xC122
    assert web.failure_reason(ReasonCode.NOT_DICOM) == 0xC000
    assert web.failure_reason(ReasonCode.NO_PIXEL_DATA) == 0x0122
    assert web.failure_reason(ReasonCode.TOO_LARGE) == 0xA700
    assert web.failure_reason(ReasonCode.INCONSISTENT_GEOMETRY) == 0x0110
    assert web.failure_reason("no-such-reason") == 0x0110


def test_the_store_response_names_stored_instances_and_failures_without_instance_uids():
    response = web.store_response(
        [web.StoredInstance("1.2.840.10008.5.1.4.1.1.4", "2.25.7", "https://x/dicomweb/studies/2.25.5")],
        [web.FailedInstance("1.2.840.10008.5.1.4.1.1.4", web.FailureReason.TRANSFER_SYNTAX_NOT_SUPPORTED)],
        "https://x/dicomweb/studies/2.25.5",
    )
    [stored] = response["00081199"]["Value"]
    assert stored["00081155"]["Value"] == ["2.25.7"] and stored["00081190"]["vr"] == "UR"
    [failed] = response["00081198"]["Value"]
    assert failed["00081197"] == {"vr": "US", "Value": [0xC122]} and "00081155" not in failed


EXAM = web.Exam(
    "exam1234",
    {
        "study_instance_uid": "2.25.1",
        "series": [
            {
                "series_instance_uid": "2.25.2",
                "series_number": 3,
                "modality": "MR",
                "series_class": "T1",
                "instances": 4,
                "tags": {
                    "SeriesDescription": "T1 3D",
                    "EchoTime": 2.9,
                    "NotAKeyword": 1,
                    "ImageType": ["A", "B"],
                },
                "decision": {"selected": True, "rule": "3d-t1", "explanation": ["rule 3d-t1 matched"]},
                "study_id": "exam1234",
            },
            {
                "series_instance_uid": "2.25.3",
                "modality": "CT",
                "instances": 2,
                "decision": {"selected": False},
            },
        ],
    },
)


def test_qido_matching_and_results():
    assert web.uid_list("2.25.1\\2.25.9, 2.25.8") == {"2.25.1", "2.25.9", "2.25.8"}
    assert web.matching_exams([EXAM], {"2.25.1"}, {"CT"}) == [EXAM]
    assert web.matching_exams([EXAM], None, {"PT"}) == []
    assert [s.series_instance_uid for s in web.matching_series(EXAM.series, None, {"MR"})] == ["2.25.2"]
    study = web.study_result(EXAM, "https://x/s")
    assert study["00080061"]["Value"] == ["CT", "MR"] and study["00201208"]["Value"] == [6]
    assert study["00111001"]["Value"] == ["exam1234"]
    plain = web.series_result(EXAM.series[0], "https://x/s/2.25.2")
    assert plain["0008103E"]["Value"] == ["T1 3D"] and "00180081" not in plain
    assert plain["00111004"]["Value"] == ["T1"] and plain["00111005"]["Value"] == ["rule 3d-t1 matched"]
    echo = web.series_result(EXAM.series[0], "u", [web.attribute_tag("EchoTime")])
    assert echo["00180081"]["Value"] == [2.9] and "00080008" not in echo
    everything = web.series_result(EXAM.series[0], "u", [])
    assert everything["00080008"]["Value"] == ["A", "B"]
    assert web.attribute_tag("00180081") == web.attribute_tag("EchoTime")
    with pytest.raises(web.UnknownAttribute):
        web.attribute_tag("EchoTimes")


def test_instance_metadata_leaves_out_pixels_and_bulk_data():
    data = make_series(1, 8, 8, phi=True).instances[0]
    header = web.read_header(data)
    assert header is not None and web.read_header(b"not dicom") is None
    metadata = web.instance_metadata(header)
    assert "7FE00010" not in metadata and "00100010" in metadata  # no pixels; short values stay
    big = Dataset()
    big.SOPInstanceUID = "2.25.4"
    big.add_new(0x00420011, "OB", b"x" * (web.BULK_DATA_BYTES + 1))
    assert "00420011" not in web.instance_metadata(big)


def test_the_cli_takes_the_dicom_of_a_folder_under_names_of_its_own(tmp_path: Path):
    series = make_series(3, 8, 8)
    (tmp_path / "DOE^JANE" / "sub").mkdir(parents=True)
    for index, data in enumerate(series.instances):
        (tmp_path / "DOE^JANE" / "sub" / f"slice{index}").write_bytes(data)
    (tmp_path / "DOE^JANE" / "README.txt").write_text("notes")
    (tmp_path / "DOE^JANE" / ".hidden").write_bytes(series.instances[0])
    assert is_dicom_input([tmp_path / "DOE^JANE"])
    upload = collect([tmp_path / "DOE^JANE"])
    assert len(upload.files) == 3 and upload.skipped == 1
    assert upload.names == ["00000.dcm", "00001.dcm", "00002.dcm"]
    (tmp_path / "scan.zip").write_bytes(b"PK")
    assert collect([tmp_path / "scan.zip"]).names == ["00000.zip"]
    (tmp_path / "t1.nii").write_bytes(b"\x5c\x01" + b"\0" * 400)
    assert not is_dicom_input([tmp_path / "t1.nii"])


def test_the_cli_describes_each_series_decision():
    view = {"status": "QUEUED", "series": EXAM.dicom["series"]}
    decisions = series_decisions(view)
    assert [(d["class"], d["selected"], d["study_id"]) for d in decisions] == [
        ("T1", True, "exam1234"),
        (None, False, None),
    ]
    text = describe("exam1234", view, decisions)
    assert "series 3 MR T1: selected by rule 3d-t1 -> study exam1234" in text
    assert "series ? CT unclassified: not selected" in text and "rule 3d-t1 matched" in text
