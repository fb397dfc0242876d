"""voxelpipe.validation: every malformed upload gets its reason code, and nothing but Rejected escapes."""

from __future__ import annotations

import gzip
import hashlib
import pickle
import struct
import tracemalloc

import nibabel as nib
import numpy as np
import pytest
from isal import isal_zlib

from infra.local.samples import mni152_t1_path
from tests.fixtures.bad_nifti import (
    BadNiftiCase,
    bad_nifti_cases,
    edit_header,
    make_bad_nifti,
    make_good_nifti,
)
from voxelpipe.limits import HEADER_RANGE_BYTES, Limits
from voxelpipe.rejections import ReasonCode, Rejected
from voxelpipe.upload_files import check_upload_name
from voxelpipe.validation import HeaderSummary, check_header, check_volume, check_volume_stream

MNI_T1 = mni152_t1_path()
MIB = 1 << 20
CASES = bad_nifti_cases()
# What only shows once the whole object is decoded (gzip body, voxel values); everything else
# check_header must already catch from the first HEADER_RANGE_BYTES.
NEEDS_WHOLE_OBJECT = {"truncated/cut_gz", "truncated/bad_crc", "decompression_bomb/zeros_after_volume"}


def validate(case: BadNiftiCase) -> None:
    """What ingest does: the name, then the whole object."""
    check_upload_name(case.filename)
    check_volume(case.content, case.limits)


def test_reason_codes_are_the_documented_strings() -> None:
    assert {code.value for code in ReasonCode} == {
        "not_an_image",
        "truncated",
        "bad_header",
        "unsupported_dimensions",
        "too_large",
        "decompression_bomb",
        "non_finite_data",
        "invalid_name",
        "unknown_analysis",
        "not_dicom",
        "no_pixel_data",
        "mixed_series",
        "inconsistent_geometry",
        "unsupported_transfer_syntax",
        "incomplete_series",
        "burned_in_phi",
        "no_series_selected",
    }
    assert ReasonCode.TRUNCATED == "truncated" and str(ReasonCode.TOO_LARGE) == "too_large"


def test_every_reason_has_a_fixture() -> None:
    # unknown_analysis is about the request, not the file: tested end to end.  The DICOM codes
    # have their fixtures in tests/fixtures/dicom.py (tests/unit/test_dicom_series.py checks them);
    # no_series_selected is the routing rules' (tests/unit/test_exams.py).
    dicom_reasons = {
        ReasonCode.NOT_DICOM,
        ReasonCode.NO_PIXEL_DATA,
        ReasonCode.MIXED_SERIES,
        ReasonCode.INCONSISTENT_GEOMETRY,
        ReasonCode.UNSUPPORTED_TRANSFER_SYNTAX,
        ReasonCode.INCOMPLETE_SERIES,
        ReasonCode.BURNED_IN_PHI,
    }
    file_reasons = (
        set(ReasonCode) - {ReasonCode.UNKNOWN_ANALYSIS, ReasonCode.NO_SERIES_SELECTED} - dicom_reasons
    )
    assert {case.reason for case in CASES} == file_reasons
    for code in file_reasons:
        assert make_bad_nifti(code.value).reason == code


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_upload_gets_its_reason(case: BadNiftiCase) -> None:
    with pytest.raises(Rejected) as caught:
        validate(case)
    assert caught.value.reason == case.reason, caught.value.detail
    assert caught.value.detail and caught.value.detail[0].isupper()


@pytest.mark.parametrize(
    "case",
    [c for c in CASES if c.id not in NEEDS_WHOLE_OBJECT and c.reason != ReasonCode.NON_FINITE_DATA],
    ids=lambda c: c.id,
)
def test_header_check_on_a_range_read_gets_the_same_reason(case: BadNiftiCase) -> None:
    with pytest.raises(Rejected) as caught:
        check_upload_name(case.filename)
        check_header(case.content[:HEADER_RANGE_BYTES], len(case.content), case.limits)
    assert caught.value.reason == case.reason, caught.value.detail


@pytest.mark.parametrize("compressed", [False, True])
@pytest.mark.parametrize("nifti2", [False, True])
@pytest.mark.parametrize("big_endian", [False, True])
def test_good_volumes_pass(compressed, nifti2, big_endian) -> None:
    name, content = make_good_nifti(compressed, nifti2=nifti2, big_endian=big_endian, slope=0.5, inter=3.0)
    assert check_upload_name(name) == name
    volume = check_volume(content, Limits())
    assert volume.header == HeaderSummary(
        nifti_version=2 if nifti2 else 1,
        compressed=compressed,
        shape=(32, 32, 24),
        voxel_size_mm=(2.0, 2.0, 2.5),
        datatype="int16",
        declared_bytes=(544 if nifti2 else 352) + 32 * 32 * 24 * 2,
        orientation=("R", "A", "S"),
    )
    assert volume.sha256 == hashlib.sha256(content).hexdigest()
    raw = gzip.decompress(content) if compressed else content
    reference = (nib.Nifti2Image if nifti2 else nib.Nifti1Image).from_bytes(raw)
    data = reference.get_fdata(dtype=np.float32)  # the values the analyses see
    assert (volume.data_min, volume.data_max) == (data.min(), data.max())


def test_mni152_t1_passes_and_the_range_read_agrees() -> None:
    content = MNI_T1.read_bytes()
    assert len(content) > HEADER_RANGE_BYTES
    whole = check_header(content, len(content), Limits())
    assert check_header(content[:HEADER_RANGE_BYTES], len(content), Limits()) == whole
    assert whole == HeaderSummary(
        nifti_version=1,
        compressed=True,
        shape=(197, 233, 189),
        voxel_size_mm=(1.0, 1.0, 1.0),
        datatype="uint8",
        declared_bytes=352 + 197 * 233 * 189,
        orientation=("R", "A", "S"),
    )
    volume = check_volume(content, Limits())
    assert volume.header == whole
    assert volume.sha256 == hashlib.sha256(content).hexdigest()
    assert (volume.data_min, volume.data_max) == (0.0, 255.0)


@pytest.mark.parametrize("nifti2", [False, True])
def test_range_read_of_a_large_gz_gives_the_whole_files_summary(nifti2) -> None:
    _, content = make_good_nifti(True, shape=(96, 96, 64), nifti2=nifti2, big_endian=True)
    assert len(content) > HEADER_RANGE_BYTES
    assert check_header(content[:HEADER_RANGE_BYTES], len(content), Limits()) == check_header(
        content, len(content), Limits()
    )


def test_constant_volume_is_accepted() -> None:
    content = nib.Nifti1Image(np.zeros((10, 10, 10), np.float32), np.eye(4)).to_bytes()
    volume = check_volume(content, Limits())
    assert volume.data_min == volume.data_max == 0.0


def test_single_volume_4d_is_accepted() -> None:
    content = nib.Nifti1Image(np.ones((10, 11, 12, 1), np.int16), np.eye(4)).to_bytes()
    assert check_volume(content, Limits()).header.shape == (10, 11, 12)


def test_microns_are_reported_in_mm() -> None:
    raw = make_good_nifti(False)[1]
    content = edit_header(raw, lambda h: h.set_xyzt_units("micron"))
    summary = check_header(content, len(content), Limits())
    assert summary.voxel_size_mm == pytest.approx((0.002, 0.002, 0.0025))


@pytest.mark.parametrize("esize", [1 << 30, -16, 7])
def test_a_header_extension_that_cannot_be_read_is_bad_header(esize: int) -> None:
    # Flagged, with a size that runs past vox_offset (or is negative, or not a multiple of 16):
    # nibabel.load, and so Prepare, refuses the file; validation must, before it is queued.
    raw = make_good_nifti(False)[1]
    body = struct.pack("<ii", esize, 4) + b"hostile!"
    content = edit_header(
        raw[:348] + b"\x01\x00\x00\x00" + body + raw[352:],
        lambda h: h.__setitem__("vox_offset", 352 + len(body)),
    )
    for data in (content, gzip.compress(content)):
        with pytest.raises(Rejected) as caught:
            check_volume(data, Limits())
        assert caught.value.reason == ReasonCode.BAD_HEADER, caught.value.detail


@pytest.mark.parametrize("units", [7, 255])
def test_an_undefined_unit_code_is_taken_as_unknown_like_a_zero_one(units: int) -> None:
    # xyzt_units' low three bits name the spatial unit; 4 to 7 name none (nibabel raises for them).
    raw = make_good_nifti(False)[1]
    content = edit_header(raw, lambda h: h.__setitem__("xyzt_units", units))
    summary = check_volume(content, Limits()).header
    assert summary.voxel_size_mm == pytest.approx((2.0, 2.0, 2.5))


def test_declared_size_is_checked_before_the_upload_size_matters() -> None:
    # A header claiming more voxels than allowed is too_large even though the file is tiny.
    case = make_bad_nifti("too_large", "declared_voxels")
    assert len(case.content) < MIB
    with pytest.raises(Rejected) as caught:
        check_header(case.content[:HEADER_RANGE_BYTES], len(case.content), Limits())
    assert caught.value.reason == ReasonCode.TOO_LARGE


def test_gigabyte_bomb_is_rejected_without_inflating_it() -> None:
    header_and_volume = nib.Nifti1Image(np.ones((16, 16, 16), np.uint8), np.eye(4)).to_bytes()
    compressor = isal_zlib.compressobj(1, isal_zlib.DEFLATED, 16 + isal_zlib.MAX_WBITS)
    parts = [compressor.compress(header_and_volume)]
    zeros = bytes(MIB)
    parts += [compressor.compress(zeros) for _ in range(1024)]
    parts.append(compressor.flush())
    bomb = b"".join(parts)
    # The header looks fine: only decoding shows the bomb.
    assert check_header(bomb[:HEADER_RANGE_BYTES], len(bomb), Limits()).shape == (16, 16, 16)
    tracemalloc.start()
    try:
        with pytest.raises(Rejected) as caught:
            check_volume(bomb, Limits())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert caught.value.reason == ReasonCode.DECOMPRESSION_BOMB
    assert peak < 64 * MIB  # a little past the declared size, not a gigabyte


def test_trailing_padding_within_tolerance_is_accepted() -> None:
    raw = make_good_nifti(False)[1]
    volume = check_volume(gzip.compress(raw + bytes(4096)), Limits())
    assert volume.header.shape == (32, 32, 24)


def test_expansion_ratio_limits_what_may_follow_the_declared_data() -> None:
    raw = make_good_nifti(False)[1]
    content = gzip.compress(raw + bytes(200_000))
    check_volume(content, Limits())  # within the 1 MiB tolerance and a 100:1 ratio
    with pytest.raises(Rejected) as caught:
        check_volume(content, Limits(max_expansion_ratio=2.0))
    assert caught.value.reason == ReasonCode.DECOMPRESSION_BOMB


@pytest.mark.parametrize(
    "name",
    ["sub-01_T1w.nii.gz", "Müller T1 (2).nii", "scan.v2.nii.gz", "ct_頭部.nii.gz", "a" * 200 + ".nii"],
)
def test_plain_names_are_accepted(name) -> None:
    assert check_upload_name(name) == name


@pytest.mark.parametrize(
    "name",
    ["", "   ", "..", "a/b.nii", "/etc/passwd", "C:scan.nii", "scan.nii.", "x\ny.nii", "a" * 300, "%2F.nii"],
)
def test_tricky_names_are_rejected(name) -> None:
    with pytest.raises(Rejected) as caught:
        check_upload_name(name)
    assert caught.value.reason == ReasonCode.INVALID_NAME


def test_rejected_carries_reason_and_detail_through_pickle() -> None:
    error = Rejected(ReasonCode.TRUNCATED, "The file ends early.")
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.reason, copy.detail) == (ReasonCode.TRUNCATED, "The file ends early.")
    assert str(copy) == "truncated: The file ends early."


def test_limits_defaults() -> None:
    limits = Limits()
    assert limits.max_upload_bytes == 1024**3
    assert limits.max_voxels == 2**26  # what tissue-seg holds in RunAnalysis (see limits.py)
    assert limits.max_dim == 4096
    assert limits.max_expansion_ratio > 1
    # The largest volume, even as float64, fits the upload limit with room.
    assert limits.max_declared_bytes < limits.max_upload_bytes


# --- streaming: the same answers, whatever the chunks --------------------------------------------


def _chunked(data: bytes, sizes: list[int]):
    start, index = 0, 0
    while start < len(data):
        size = sizes[index % len(sizes)]
        yield data[start : start + size]
        start, index = start + size, index + 1


@pytest.mark.parametrize("sizes", [[1], [3, 5, 7], [4096], [1 << 20]], ids=str)
@pytest.mark.parametrize("compressed", [False, True])
def test_any_chunking_gives_the_summary_of_the_whole_object(sizes, compressed) -> None:
    # float64 voxels with scaling: 1-, 3-, 5- and 7-byte chunks split voxels between chunks.
    _, content = make_good_nifti(compressed, shape=(12, 10, 8), dtype=np.float64, slope=0.5, inter=-3.0)
    streamed = check_volume_stream(_chunked(content, sizes), len(content), Limits())
    assert streamed == check_volume(content, Limits())
    assert streamed.sha256 == hashlib.sha256(content).hexdigest()


@pytest.mark.parametrize("case", [c for c in CASES if len(c.content) < MIB], ids=lambda c: c.id)
def test_every_bad_upload_gets_its_reason_in_small_chunks(case: BadNiftiCase) -> None:
    with pytest.raises(Rejected) as caught:
        check_upload_name(case.filename)
        check_volume_stream(_chunked(case.content, [977]), len(case.content), case.limits)
    assert caught.value.reason == case.reason, caught.value.detail


def test_a_failed_read_is_not_the_uploads_fault() -> None:
    _, content = make_good_nifti(True, shape=(64, 64, 64))

    def broken_body():
        yield content[:70_000]
        raise ConnectionResetError("the connection dropped")

    with pytest.raises(ConnectionResetError):
        check_volume_stream(broken_body(), len(content), Limits())


def test_values_past_float32_are_rejected_with_a_sentence_that_says_so() -> None:
    with pytest.raises(Rejected) as caught:
        check_volume(make_bad_nifti("non_finite_data", "int16_slope_past_float32").content, Limits())
    assert caught.value.reason == ReasonCode.NON_FINITE_DATA
    assert "scl_slope=3e+38" in caught.value.detail and "float32" in caught.value.detail
    with pytest.raises(Rejected) as caught:
        check_volume(make_bad_nifti("non_finite_data", "float64_past_float32").content, Limits())
    assert caught.value.detail.startswith(
        "The volume has 2 voxels (of 24576) whose values exceed what float32"
    )
    with pytest.raises(Rejected) as caught:
        check_volume(make_bad_nifti("non_finite_data", "nan_voxels").content, Limits())
    assert caught.value.detail.startswith("The volume has 2 NaN or infinite voxels (of 24576)")


def test_the_value_range_is_what_the_analyses_see() -> None:
    # int16 scaled by a float slope: float32 values, as volume.voxel_data gives them.
    _, content = make_good_nifti(False, slope=0.1, inter=0.3)
    volume = check_volume(content, Limits())
    seen = nib.Nifti1Image.from_bytes(content).get_fdata(dtype=np.float32)
    assert (volume.data_min, volume.data_max) == (float(seen.min()), float(seen.max()))


# --- fuzz: arbitrary bytes never raise anything but Rejected ---------------------------------------


def _outcome(content: bytes) -> str:
    """'ok' or the reason; any other exception fails the test."""
    limits = Limits()
    results = []
    for check in (
        lambda: check_header(content[:HEADER_RANGE_BYTES], len(content), limits),
        lambda: check_volume(content, limits),
    ):
        try:
            check()
            results.append("ok")
        except Rejected as rejected:
            assert isinstance(rejected.reason, ReasonCode) and rejected.detail
            results.append(str(rejected.reason))
    return results[1]


def _mutations(rng: np.random.Generator, base: bytes, count: int, span: int) -> list[bytes]:
    out = []
    for _ in range(count):
        blob = bytearray(base)
        for _ in range(int(rng.integers(1, 6))):
            position = int(rng.integers(0, min(span, len(blob))))
            blob[position] = int(rng.integers(0, 256))
        out.append(bytes(blob))
    return out


def test_fuzz_random_and_garbled_bytes_only_ever_reject() -> None:
    rng = np.random.default_rng(20240601)
    good_nii = make_good_nifti(False, shape=(8, 8, 6))[1]
    good_n2 = make_good_nifti(False, shape=(8, 8, 6), nifti2=True, big_endian=True)[1]
    inputs: list[bytes] = []
    # Random bytes of every size, bare and behind each magic.
    for size in [0, 1, 2, 3, 4, 10, 100, 347, 348, 351, 352, 540, 1000, 5000]:
        for _ in range(5):
            noise = rng.integers(0, 256, size, dtype=np.uint8).tobytes()
            inputs += [noise, b"\x1f\x8b" + noise, b"\x1f\x8b\x08\x00" + noise, gzip.compress(noise)]
            if size >= 348:
                inputs.append((348).to_bytes(4, "little") + noise[4:344] + b"n+1\x00" + noise[348:])
                inputs.append((540).to_bytes(4, "big") + b"n+2\x00\r\n\x1a\n" + noise[12:])
    # Valid files with garbled headers, garbled gzip bodies, and cut at random points.
    for base in (good_nii, good_n2):
        mutated = _mutations(rng, base, 300, 560)
        inputs += mutated
        inputs += [gzip.compress(blob) for blob in mutated[:60]]
        packed = gzip.compress(base)
        inputs += _mutations(rng, packed, 100, len(packed))
        inputs += [base[: int(rng.integers(0, len(base)))] for _ in range(40)]
        inputs += [packed[: int(rng.integers(0, len(packed)))] for _ in range(40)]
    outcomes = [_outcome(blob) for blob in inputs]
    # The fuzz reaches deep: the header passes in some and fails for many different reasons.
    assert "ok" in outcomes
    assert len(set(outcomes)) >= 5, set(outcomes)
