"""voxelpipe.dicom: a series -> a volume (values, geometry, reasons), object sniffing, series archives."""

from __future__ import annotations

import gzip
import io
import pickle
import random
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.dataelem import DataElement
from pydicom.dataset import FileMetaDataset
from pydicom.filereader import data_element_generator

from tests.fixtures.dicom import (
    DICOM_REASONS,
    DicomCase,
    dicom_cases,
    header_only,
    make_dicom_case,
    make_enhanced,
    make_series,
    oblique,
    to_bytes,
)
from voxelpipe.dicom import (
    NeedMoreData,
    assemble_series,
    check_series,
    looks_like_dicom,
    read_instance_header,
    read_series_zip,
)
from voxelpipe.dicom.sniff import frame_rescales, parse_instance
from voxelpipe.dicom.values import read_rescale
from voxelpipe.limits import Limits
from voxelpipe.nifti import load_nifti, to_nifti_bytes
from voxelpipe.rejections import ReasonCode, Rejected

CASES = dicom_cases()


def volume_values(volume) -> np.ndarray:
    return np.asanyarray(volume.image.dataobj)


def assert_matches_truth(volume, series, atol: float = 1e-6) -> None:
    """A native-order (canonical=False) volume holds the series' values at the series' geometry."""
    np.testing.assert_allclose(volume_values(volume), series.values.transpose(2, 1, 0), atol=atol)
    np.testing.assert_allclose(volume.image.affine, series.ras_affine(), atol=1e-5)


# --- reasons ----------------------------------------------------------------------------------------


def test_every_dicom_reason_has_a_case() -> None:
    assert {case.reason for case in CASES} >= DICOM_REASONS
    for code in DICOM_REASONS:
        assert make_dicom_case(code.value).reason == code


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_broken_upload_gets_its_reason(case: DicomCase) -> None:
    with pytest.raises(Rejected) as caught:
        assemble_series(case.instances)
    assert caught.value.reason == case.reason, caught.value.detail
    assert caught.value.detail[0].isupper()


@pytest.mark.parametrize("case", [c for c in CASES if not c.found_by_decoding], ids=lambda c: c.id)
def test_ingest_reaches_the_same_verdict(case: DicomCase) -> None:
    """Each object's header as it lands, then the series at completion: Prepare's verdict, early."""
    with pytest.raises(Rejected) as caught:
        summaries = [read_instance_header(data) for data in case.instances]
        check_series(summaries)
    assert caught.value.reason == case.reason, caught.value.detail


@pytest.mark.parametrize("case", [c for c in CASES if c.found_by_decoding], ids=lambda c: c.id)
def test_ingest_passes_what_only_decoding_finds(case: DicomCase) -> None:
    assert check_series([read_instance_header(data) for data in case.instances]) is None


@pytest.mark.parametrize("variant", ["axial", "oblique", "rle", "float_rescale"])
def test_good_series_pass_the_completion_check(variant: str) -> None:
    series = make_series(**VARIANTS[variant])
    summaries = [read_instance_header(data) for data in series.instances]
    assert check_series(summaries + summaries[:1]) is None  # a repeated object counts once
    assert check_series([read_instance_header(make_enhanced().instances[0])]) is None


def test_rejected_survives_pickling() -> None:
    with pytest.raises(Rejected) as caught:
        assemble_series(make_dicom_case("mixed_series").instances)
    copy = pickle.loads(pickle.dumps(caught.value))
    assert (copy.reason, copy.detail) == (ReasonCode.MIXED_SERIES, caught.value.detail)


# --- values and geometry ------------------------------------------------------------------------------

VARIANTS = {
    "axial": {},
    "sagittal": {"orientation": "sagittal"},
    "coronal": {"orientation": "coronal"},
    "oblique": {"orientation": oblique(25.0)},
    "implicit_vr": {"implicit": True},
    "uint16_ct_like": {"dtype": np.uint16, "bits_stored": 12, "intercept": -1024.0},
    "integral_rescale": {"slope": 2.0, "intercept": -100.0},
    "float_rescale": {"slope": 0.5, "intercept": 3.25},
    "rle": {"compressed": "rle"},
    "jpeg2000": {"compressed": "jpeg2000", "rows": 64, "cols": 48},
}


@pytest.mark.parametrize("variant", VARIANTS, ids=str)
def test_series_converts_to_its_values_and_geometry(variant: str) -> None:
    series = make_series(**VARIANTS[variant])
    volume = assemble_series(series.instances, canonical=False)
    assert_matches_truth(volume, series)
    report = volume.report
    assert report.n_slices == report.n_instances == len(series.instances)
    assert report.shape == (series.pixels.shape[2], series.pixels.shape[1], series.pixels.shape[0])
    assert report.slice_spacing_mm == pytest.approx(series.slice_spacing)
    assert report.rescaled == ((series.slope, series.intercept) != (1.0, 0.0))


@pytest.mark.parametrize("variant", ["axial", "sagittal", "coronal", "oblique"])
def test_canonical_output_is_nibabels_closest_canonical(variant: str) -> None:
    series = make_series(**VARIANTS[variant])
    native = assemble_series(series.instances, canonical=False)
    canonical = assemble_series(series.instances)
    reference = nib.as_closest_canonical(native.image)
    np.testing.assert_array_equal(volume_values(canonical), np.asanyarray(reference.dataobj))
    np.testing.assert_allclose(canonical.image.affine, reference.affine, atol=1e-9)
    assert canonical.report.orientation == ("R", "A", "S")
    assert native.report.acquisition_orientation == canonical.report.acquisition_orientation


def test_output_types_follow_the_rescale() -> None:
    assert assemble_series(make_series().instances).report.dtype == "int16"
    ct = assemble_series(make_series(dtype=np.uint16, bits_stored=12, intercept=-1024.0).instances)
    assert ct.report.dtype == "int16"  # 0..4095 - 1024 fits
    wide = assemble_series(make_series(slope=2.0, intercept=-100.0).instances)
    assert wide.report.dtype == "int32"  # 16 stored bits doubled does not
    assert assemble_series(make_series(slope=0.5).instances).report.dtype == "float32"


def test_object_order_and_duplicates_do_not_matter() -> None:
    series = make_series(n_slices=8)
    reference = assemble_series(series.instances)
    shuffled = list(series.instances) + series.instances[:2]
    random.Random(4).shuffle(shuffled)
    again = assemble_series(shuffled)
    np.testing.assert_array_equal(volume_values(again), volume_values(reference))
    assert again.report.duplicates_dropped == 2
    assert again.report.n_objects == 10 and again.report.n_instances == 8


def test_objects_without_pixels_are_skipped() -> None:
    series = make_series()
    extra = header_only(make_series(n_slices=1, series_uid=series.series_uid).instances[0])
    volume = assemble_series([*series.instances, extra])
    assert volume.report.ignored_objects == 1
    assert volume.report.n_instances == len(series.instances)


def test_enhanced_multiframe_object_is_a_series() -> None:
    series = make_enhanced(slope=1.5)
    volume = assemble_series(series.instances, canonical=False)
    assert_matches_truth(volume, series)
    assert volume.report.multi_frame and volume.report.dtype == "float32"


def test_enhanced_frames_take_their_own_rescale_else_the_shared_one() -> None:
    def edit(ds) -> None:  # frame 2 (as stored) rescales by 3, the others by the shared 1.5
        transform = pydicom.Dataset()
        transform.RescaleSlope, transform.RescaleIntercept, transform.RescaleType = 3.0, -2.0, "US"
        ds.PerFrameFunctionalGroupsSequence[2].PixelValueTransformationSequence = [transform]

    series = make_enhanced(slope=1.5, edit=edit)
    stored = parse_instance(series.instances[0])
    assert frame_rescales(stored) == [(1.5, 0.0), (1.5, 0.0), (3.0, -2.0), (1.5, 0.0), (1.5, 0.0)]


@pytest.mark.parametrize(
    ("slope", "intercept", "expected"),
    [
        (None, None, (1.0, 0.0)),  # absent: the identity
        (b"2.5 ", None, (2.5, 0.0)),
        (None, b"-1024 ", (1.0, -1024.0)),
        (b" +1.0E-3", b"-0.5", (0.001, -0.5)),
    ],
)
def test_usable_rescales_are_read(slope, intercept, expected) -> None:
    assert read_rescale(slope, intercept) == expected


RTDOSE = Path(pydicom.__file__).parent / "data" / "test_files" / "rtdose.dcm"


@pytest.mark.parametrize(("scaling", "reason"), [("0", "is 0"), ("inf", "not a finite"), ("x", "not one")])
def test_an_unusable_dose_grid_scaling_is_rejected(scaling: str, reason: str) -> None:
    if not RTDOSE.is_file():
        pytest.skip("pydicom's test files are not installed")
    ds = pydicom.dcmread(RTDOSE)
    assert assemble_series([to_bytes(ds)]).report.rescaled  # as shipped: 1e-6 Gy a step
    ds[0x3004000E] = DataElement(0x3004000E, "LO", scaling)  # the text where the DS goes
    data = to_bytes(ds, implicit=True)
    for check in (lambda: assemble_series([data]), lambda: read_instance_header(data)):
        with pytest.raises(Rejected) as caught:
            check()
        assert caught.value.reason == ReasonCode.BAD_HEADER and reason in caught.value.detail


def test_jpeg_baseline_decodes_within_lossy_error() -> None:
    series = make_series(n_slices=4, rows=32, cols=32, compressed="jpeg", dtype=np.uint8)
    volume = assemble_series(series.instances, canonical=False)
    error = np.abs(volume_values(volume).astype(float) - series.values.transpose(2, 1, 0))
    assert error.mean() < 3 and volume.report.transfer_syntaxes == ("JPEG Baseline (Process 1)",)


def test_threaded_decode_equals_serial() -> None:
    series = make_series(n_slices=10, rows=48, cols=48, compressed="rle")
    serial = assemble_series(series.instances, workers=1)
    threaded = assemble_series(series.instances, workers=2)
    assert serial.report.decode_workers == 1 and threaded.report.decode_workers == 2
    np.testing.assert_array_equal(volume_values(threaded), volume_values(serial))


def test_gantry_tilt_is_kept_as_a_shear() -> None:
    def tilt(k: int, ds) -> None:  # each slice 0.3 mm further posterior: ~11 degrees of tilt
        x, y, z = (float(v) for v in ds.ImagePositionPatient)
        ds.ImagePositionPatient = [x, y + 0.3 * k, z]

    series = make_series(edit=tilt, shuffle=False)
    volume = assemble_series(series.instances, canonical=False)
    assert volume.report.gantry_tilt_deg == pytest.approx(np.degrees(np.arctan(0.3 / 1.5)), abs=1e-6)
    assert any("gantry tilt" in w for w in volume.report.warnings)
    for k in range(len(series.instances)):  # voxel (0, 0, k) sits where slice k says it is
        ds = pydicom.dcmread(io.BytesIO(series.instances[k]))
        lps = np.array([float(v) for v in ds.ImagePositionPatient])
        np.testing.assert_allclose(
            volume.image.affine @ [0, 0, k, 1], [-lps[0], -lps[1], lps[2], 1], atol=1e-6
        )


@pytest.mark.parametrize(("jitter", "warned"), [(0.001, False), (0.03, True)])
def test_small_spacing_jitter_is_accepted(jitter: float, warned: bool) -> None:
    offsets = [0.0, 1.5 + 1.5 * jitter, 3.0, 4.5 - 1.5 * jitter, 6.0, 7.5]

    def edit(k: int, ds) -> None:
        ds.ImagePositionPatient = [-10.0, -12.0, 30.0 + offsets[k]]

    volume = assemble_series(make_series(edit=edit).instances)
    assert volume.report.slice_spacing_mm == pytest.approx(1.5)
    assert any("slice steps vary" in w for w in volume.report.warnings) == warned


def test_burned_in_annotation_can_be_flagged_instead() -> None:
    series = make_series(burned_in="YES")
    volume = assemble_series(series.instances, burned_in="flag")
    assert volume.report.burned_in_annotation
    assert any("Burned In Annotation" in w for w in volume.report.warnings)


def test_limits_apply_before_allocation() -> None:
    series = make_series()
    with pytest.raises(Rejected) as caught:
        assemble_series(series.instances, limits=Limits(max_voxels=100))
    assert caught.value.reason == ReasonCode.TOO_LARGE
    with pytest.raises(Rejected) as caught:
        assemble_series(series.instances, limits=Limits(max_dim=10))
    assert caught.value.reason == ReasonCode.UNSUPPORTED_DIMENSIONS


def test_report_carries_no_identifiers() -> None:
    series = make_series()
    report = repr(assemble_series(series.instances).report)
    assert "Doe" not in report and series.series_uid not in report and series.study_uid not in report


# --- NIfTI bytes --------------------------------------------------------------------------------------


@pytest.mark.parametrize("compress", [False, True])
def test_nifti_bytes_are_to_nifti_bytes(compress: bool) -> None:
    volume = assemble_series(make_series(slope=0.5, intercept=1.0).instances)
    ours = bytes(volume.nifti_bytes(compress))
    if compress:
        assert gzip.decompress(ours) == to_nifti_bytes(volume.image, False)
    else:
        assert ours == to_nifti_bytes(volume.image, False)
    loaded = load_nifti(ours)
    np.testing.assert_array_equal(np.asanyarray(loaded.dataobj), volume_values(volume))
    np.testing.assert_allclose(loaded.affine, volume.image.affine, atol=1e-5)
    assert loaded.header["qform_code"] == loaded.header["sform_code"] == 1
    assert loaded.header["descrip"].item() == b""


def bare_dataset(data: bytes) -> bytes:
    """The same object written without preamble and file meta (ACR-NEMA style), explicit VR LE."""
    ds = pydicom.dcmread(io.BytesIO(data))
    ds.preamble = None
    ds.file_meta = FileMetaDataset()
    raw = io.BytesIO()
    ds.save_as(raw, enforce_file_format=False, implicit_vr=False, little_endian=True)
    return raw.getvalue()


# --- one object ---------------------------------------------------------------------------------------


def test_instance_summary() -> None:
    series = make_series(shuffle=False, slope=2.0, intercept=-100.0)
    summary = read_instance_header(series.instances[1])
    assert summary.series_instance_uid == series.series_uid
    assert summary.study_instance_uid == series.study_uid
    assert (summary.rows, summary.columns, summary.frames) == (24, 20, 1)
    assert summary.modality == "MR" and summary.photometric_interpretation == "MONOCHROME2"
    assert summary.image_position == pytest.approx((-10.0, -12.0, 31.5))
    assert summary.image_orientation == (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
    assert summary.pixel_spacing == (0.9, 0.8)
    assert (summary.rescale_slope, summary.rescale_intercept) == (2.0, -100.0)
    assert summary.burned_in_annotation is None and not summary.enhanced


@pytest.mark.parametrize("kwargs", [{}, {"implicit": True}, {"compressed": "rle"}], ids=str)
def test_header_values_and_pixels_are_what_pydicom_reads(kwargs: dict) -> None:
    """The summary's numbers (from pydicom's raw values) and the pixel location, against dcmread."""
    data = make_series(n_slices=1, slope=2.0, intercept=-100.0, **kwargs).instances[0]
    parsed = parse_instance(data)
    ds = pydicom.dcmread(io.BytesIO(data), defer_size=16)
    s = parsed.summary
    assert (s.sop_instance_uid, s.series_instance_uid) == (ds.SOPInstanceUID, ds.SeriesInstanceUID)
    assert s.transfer_syntax == ds.file_meta.TransferSyntaxUID
    assert (s.rows, s.columns, s.bits_allocated, s.pixel_representation) == (
        ds.Rows,
        ds.Columns,
        ds.BitsAllocated,
        ds.PixelRepresentation,
    )
    assert s.image_position == tuple(ds.ImagePositionPatient)
    assert s.image_orientation == tuple(ds.ImageOrientationPatient)
    assert s.pixel_spacing == tuple(ds.PixelSpacing)
    assert (s.rescale_slope, s.rescale_intercept) == (ds.RescaleSlope, ds.RescaleIntercept)
    pixels = ds.get_item("PixelData", keep_deferred=True)
    assert parsed.pixels is not None and parsed.pixels.offset == pixels.value_tell
    assert parsed.pixels.length == (None if pixels.length == 0xFFFFFFFF else pixels.length)


def test_range_read_asks_for_more_or_agrees() -> None:
    data = make_series(n_slices=1).instances[0]
    with pytest.raises(NeedMoreData):
        read_instance_header(data[:300], object_size=len(data))
    assert read_instance_header(data[:4096], object_size=len(data)) == read_instance_header(data)
    cut = data[: len(data) - 100]  # the upload stopped early: the size alone tells
    with pytest.raises(Rejected) as caught:
        read_instance_header(cut[:4096], object_size=len(cut))
    assert caught.value.reason == ReasonCode.TRUNCATED


def test_any_buffer_and_long_headers() -> None:
    """A memoryview (an mmap'd file) reads as bytes do, also with a header past the first 64 KiB."""

    def long_private_block(_k: int, ds: pydicom.Dataset) -> None:
        ds.private_block(0x0029, "ACME BLOB", create=True).add_new(0x10, "OB", bytes(100_000))

    for edit in (None, long_private_block):
        data = make_series(n_slices=1, edit=edit).instances[0]
        parsed, viewed = parse_instance(data), parse_instance(memoryview(data))
        assert viewed.summary == parsed.summary and viewed.pixels == parsed.pixels
        assert parsed.pixels is not None and (parsed.pixels.offset > 100_000) == (edit is not None)


def test_a_header_cut_anywhere_is_truncated() -> None:
    """Cut inside the header: truncated; only a cut between two dataset elements reads as a whole
    header (the file meta information gives its own length)."""
    data = make_series(n_slices=1).instances[0]
    stream = io.BytesIO(data)
    stream.seek(132)
    for _ in data_element_generator(stream, False, True, stop_when=lambda tag, vr, length: tag >> 16 != 2):
        pass
    boundaries = {stream.tell()}
    for _ in data_element_generator(stream, False, True, stop_when=lambda tag, vr, length: tag == 0x7FE00010):
        boundaries.add(stream.tell())
    pixels = parse_instance(data).pixels
    assert pixels is not None
    for cut in range(133, pixels.offset):
        with pytest.raises(Rejected) as caught:
            read_instance_header(data[:cut])
        expected = ReasonCode.NO_PIXEL_DATA if cut in boundaries else ReasonCode.TRUNCATED
        assert caught.value.reason == expected, cut


def test_sniffing() -> None:
    data = make_series(n_slices=1).instances[0]
    assert looks_like_dicom(data)
    assert not looks_like_dicom(b"hello world, not dicom")
    assert not looks_like_dicom(gzip.compress(data))
    bare = bare_dataset(data)
    assert bare[128:132] != b"DICM" and looks_like_dicom(bare)
    assert parse_instance(bare).summary == parse_instance(data).summary


def test_garbled_objects_only_ever_reject() -> None:
    rng = random.Random(11)
    good = make_series(n_slices=3, shuffle=False).instances
    for _ in range(120):
        objects = list(good)
        k = rng.randrange(len(objects))
        data = bytearray(objects[k])
        for _ in range(rng.randint(1, 6)):
            pos = rng.randrange(len(data))
            data[pos : pos + rng.randint(1, 8)] = bytes(rng.randrange(256) for _ in range(rng.randint(0, 8)))
        if rng.random() < 0.3:
            data = data[: rng.randrange(len(data))]
        objects[k] = bytes(data)
        try:
            assemble_series(objects)
        except Rejected as rejected:
            assert isinstance(rejected.reason, ReasonCode) and rejected.detail
        try:
            read_instance_header(bytes(data))
        except Rejected as rejected:
            assert rejected.detail


# --- archives -----------------------------------------------------------------------------------------


def make_zip(entries: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression) as archive:
        for name, content in entries.items():
            archive.writestr(name, content)
    return out.getvalue()


def test_series_zip_yields_the_dicom_files_only() -> None:
    series = make_series(n_slices=4)
    dicomdir = to_bytes(pydicom.dcmread(io.BytesIO(series.instances[0])))
    entries = {f"PATIENT/STUDY/SERIES/IM{k:04d}": data for k, data in enumerate(series.instances)}
    entries |= {
        "DICOMDIR": dicomdir,
        "README.txt": b"exported by a viewer",
        "__MACOSX/PATIENT/._IM0000": b"\x00\x05\x16\x07",
        "PATIENT/.DS_Store": b"\x00\x00\x00\x01Bud1",
        "nested.zip": make_zip({"IM9999": series.instances[0]}),
    }
    found = read_series_zip(make_zip(entries))
    assert [name for name, _ in found] == [f"PATIENT/STUDY/SERIES/IM{k:04d}" for k in range(4)]
    volume = assemble_series([data for _, data in found])
    assert volume.report.n_slices == 4


@pytest.mark.parametrize(
    "name", ["../escape.dcm", "/etc/passwd", "C:/x.dcm", "dir\\x.dcm", "a/../../b.dcm", "bad\x01name"]
)
def test_series_zip_path_tricks_are_refused(name: str) -> None:
    data = make_zip({"ok.dcm": make_series(n_slices=1).instances[0], name: b"x"})
    with pytest.raises(Rejected) as caught:
        read_series_zip(data)
    assert caught.value.reason == ReasonCode.INVALID_NAME


def test_series_zip_bomb_is_refused_before_inflating() -> None:
    data = make_zip({"zeros.dcm": bytes(50 * 1024 * 1024)})  # 50 MiB of zeros deflate ~1000:1
    with pytest.raises(Rejected) as caught:
        read_series_zip(data)
    assert caught.value.reason == ReasonCode.DECOMPRESSION_BOMB


def _deflated(data: bytes, padding: bytes = b"") -> bytes:
    """`data` in Deflated Explicit VR Little Endian, with `padding` as a private element."""
    ds = pydicom.dcmread(io.BytesIO(data))
    ds.file_meta.TransferSyntaxUID = pydicom.uid.DeflatedExplicitVRLittleEndian
    if padding:
        ds.add_new(0x00291020, "OB", padding)
    return to_bytes(ds)


def test_a_deflated_object_that_inflates_like_a_bomb_is_refused_before_it_is_inflated() -> None:
    # 16 MiB of zeros deflate to ~16 KiB: pydicom would inflate the whole dataset into memory (a
    # 2 GiB upload of it, to terabytes), so the stream is inflated piecewise, counted, and refused.
    instance = make_series(n_slices=1, rows=16, cols=16).instances[0]
    bomb = _deflated(instance, padding=bytes(16 << 20))
    assert len(bomb) < 64 * 1024
    for reading in (lambda: read_instance_header(bomb), lambda: assemble_series([bomb])):
        with pytest.raises(Rejected) as caught:
            reading()
        assert caught.value.reason == ReasonCode.DECOMPRESSION_BOMB
    # A range read says it needs the whole object before it inflates anything.
    with pytest.raises(NeedMoreData):
        read_instance_header(bomb[:4096], object_size=len(bomb))


def test_a_deflated_series_within_the_expansion_limit_converts() -> None:
    series = make_series(n_slices=4, rows=16, cols=16)
    volume = assemble_series([_deflated(data) for data in series.instances])
    assert volume.report.n_slices == 4
    assert np.array_equal(np.sort(np.asarray(volume.image.dataobj).ravel()), np.sort(series.values.ravel()))


def test_series_zip_declared_total_is_limited() -> None:
    series = make_series(n_slices=3)
    data = make_zip({f"IM{k}": d for k, d in enumerate(series.instances)}, zipfile.ZIP_STORED)
    with pytest.raises(Rejected) as caught:
        read_series_zip(data, Limits(max_upload_bytes=len(series.instances[0])))
    assert caught.value.reason == ReasonCode.TOO_LARGE


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"not a zip at all", ReasonCode.NOT_DICOM),
        (make_zip({"a.txt": b"hello"}), ReasonCode.NOT_DICOM),
        (make_zip({"IM1": b"x" * 5000})[:-30], ReasonCode.TRUNCATED),
    ],
    ids=["not_zip", "no_dicom", "cut"],
)
def test_series_zip_bad_archives(data: bytes, reason: ReasonCode) -> None:
    with pytest.raises(Rejected) as caught:
        read_series_zip(data)
    assert caught.value.reason == reason


def test_series_zip_duplicate_names_are_refused() -> None:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive, pytest.warns(UserWarning):
        archive.writestr("IM1", b"a")
        archive.writestr("IM1", b"b")
    with pytest.raises(Rejected) as caught:
        read_series_zip(out.getvalue())
    assert caught.value.reason == ReasonCode.INVALID_NAME
