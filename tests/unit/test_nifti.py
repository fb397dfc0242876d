"""voxelpipe.nifti: ISA-L gzip decoding under a limit, header sniffing, and load_nifti == nibabel.load."""

from __future__ import annotations

import gzip
import io
import tracemalloc

import nibabel as nib
import numpy as np
import pytest
from isal import isal_zlib

from infra.local.samples import mni152_t1_path
from tests.fixtures.bad_nifti import edit_header, make_good_nifti
from voxelpipe import nifti
from voxelpipe.nifti import (
    BadHeader,
    CorruptStream,
    NotNifti,
    OutputLimitExceeded,
    TruncatedStream,
    decompress,
    decompress_prefix,
    float32_voxels,
    is_gzip,
    iter_gunzip,
    load_nifti,
    parse_header,
    to_nifti_bytes,
)

MNI_T1 = mni152_t1_path()
MIB = 1 << 20


def assert_same_image(ours: nib.Nifti1Image, ref: nib.Nifti1Image) -> None:
    """Everything a caller can observe through nibabel's API is identical."""
    assert type(ours) is type(ref)
    assert ours.shape == ref.shape
    assert ours.header.binaryblock == ref.header.binaryblock
    assert ours.header.get_data_dtype() == ref.header.get_data_dtype()
    np.testing.assert_array_equal(ours.affine, ref.affine)
    assert ours.dataobj.slope == ref.dataobj.slope and ours.dataobj.inter == ref.dataobj.inter
    ours_data, ref_data = np.asanyarray(ours.dataobj), np.asanyarray(ref.dataobj)
    assert ours_data.dtype == ref_data.dtype
    np.testing.assert_array_equal(ours_data, ref_data)
    ours_f, ref_f = ours.get_fdata(), ref.get_fdata()
    assert ours_f.dtype == ref_f.dtype
    np.testing.assert_array_equal(ours_f, ref_f)
    np.testing.assert_array_equal(ours.dataobj[3:9, ::2, 5], ref.dataobj[3:9, ::2, 5])
    assert ours.dataobj[1, 2, 3] == ref.dataobj[1, 2, 3]


def gzip_of_zeros(n_mib: int, prefix: bytes = b"") -> bytes:
    """`prefix` then `n_mib` MiB of zeros, gzip-compressed by streaming (never all in memory)."""
    compressor = isal_zlib.compressobj(1, isal_zlib.DEFLATED, 16 + isal_zlib.MAX_WBITS)
    parts = [compressor.compress(prefix)]
    zeros = bytes(MIB)
    parts += [compressor.compress(zeros) for _ in range(n_mib)]
    parts.append(compressor.flush())
    return b"".join(parts)


# --- load_nifti against nibabel.load -------------------------------------------------------------


def test_mni152_t1_matches_nibabel_load() -> None:
    ours = load_nifti(MNI_T1.read_bytes())
    assert_same_image(ours, nib.load(MNI_T1))


@pytest.mark.parametrize("compressed", [False, True], ids=["nii", "nii.gz"])
@pytest.mark.parametrize("nifti2", [False, True], ids=["nifti1", "nifti2"])
@pytest.mark.parametrize("big_endian", [False, True], ids=["le", "be"])
@pytest.mark.parametrize(
    ("dtype", "slope", "inter"),
    [(np.int16, 0.5, -10.0), (np.int16, None, None), (np.uint8, 2.0, 0.0), (np.float32, None, None)],
    ids=["int16-scaled", "int16", "uint8-slope", "float32"],
)
def test_made_images_match_nibabel_load(tmp_path, compressed, nifti2, big_endian, dtype, slope, inter):
    name, content = make_good_nifti(
        compressed, dtype=dtype, nifti2=nifti2, big_endian=big_endian, slope=slope, inter=inter
    )
    path = tmp_path / name
    path.write_bytes(content)
    ref = nib.load(path)
    ours = load_nifti(content)
    assert_same_image(ours, ref)
    assert isinstance(ours, nib.Nifti2Image if nifti2 else nib.Nifti1Image)
    if slope is not None:
        assert ours.dataobj.slope == slope
        assert np.asanyarray(ours.dataobj).dtype.kind == "f"


def test_qfac_zero_is_fixed_as_nibabel_does(tmp_path) -> None:
    # pixdim[0] = 0 is common in the wild; nibabel.load treats it as 1 for the qform.
    raw = make_good_nifti(False)[1]
    content = edit_header(raw, lambda h: h.__setitem__("sform_code", 0))
    content = edit_header(content, lambda h: h["pixdim"].__setitem__(0, 0.0))
    path = tmp_path / "q.nii"
    path.write_bytes(content)
    assert_same_image(load_nifti(content), nib.load(path))


def test_arrays_are_read_only_views_and_reads_repeat() -> None:
    img = load_nifti(make_good_nifti(True)[1])
    first = np.asanyarray(img.dataobj)
    assert not first.flags.writeable
    with pytest.raises(ValueError, match="read-only"):
        first[0, 0, 0] = 1
    np.testing.assert_array_equal(np.asanyarray(img.dataobj), first)
    assert img.get_fdata().flags.writeable  # a converted copy, as with nibabel


def test_extensions_are_read() -> None:
    img = nib.load(MNI_T1)
    img = nib.Nifti1Image(np.asanyarray(img.dataobj)[:20, :20, :20], img.affine)
    img.header.extensions.append(nib.nifti1.Nifti1Extension("comment", b"hello voxelpipe"))
    content = img.to_bytes()
    ours = load_nifti(content)
    assert [ext.get_content() for ext in ours.header.extensions] == [b"hello voxelpipe"]
    assert ours.dataobj.offset > 352
    assert_same_image(ours, nib.Nifti1Image.from_bytes(content))


def test_load_errors() -> None:
    raw = make_good_nifti(False)[1]
    with pytest.raises(TruncatedStream):
        load_nifti(raw[: len(raw) - 10])
    with pytest.raises(TruncatedStream):
        load_nifti(make_good_nifti(True)[1][:-100])
    with pytest.raises(NotNifti):
        load_nifti(b"hello" * 100)
    with pytest.raises(OutputLimitExceeded):
        load_nifti(make_good_nifti(True)[1], max_output_bytes=1000)


# --- gzip ----------------------------------------------------------------------------------------


def test_is_gzip() -> None:
    assert is_gzip(gzip.compress(b"x"))
    assert not is_gzip(b"\x5c\x01\x00\x00")
    assert not is_gzip(b"")


def test_decompress_round_trip_and_limits() -> None:
    payload = np.random.default_rng(1).integers(0, 50, 3 * MIB, dtype=np.uint8).tobytes()
    packed = gzip.compress(payload)
    assert decompress(packed, len(payload)) == payload
    with pytest.raises(OutputLimitExceeded):
        decompress(packed, len(payload) - 1)
    assert decompress(gzip.compress(b""), 0) == b""


def test_decompress_multi_member_and_zero_padding() -> None:
    a, b = b"first member " * 1000, b"second member " * 2000
    assert decompress(gzip.compress(a) + gzip.compress(b), 10 * MIB) == a + b
    # gzip allows zero padding after a member (tape blocks); the gzip module accepts it too.
    assert decompress(gzip.compress(a) + bytes(1000), 10 * MIB) == a
    assert gzip.decompress(gzip.compress(a) + bytes(1000)) == a
    with pytest.raises(OutputLimitExceeded):
        decompress(gzip.compress(a) + gzip.compress(b), len(a) + 10)


def test_decompress_truncated_and_corrupt() -> None:
    packed = gzip.compress(b"some data " * 10000)
    with pytest.raises(TruncatedStream):
        decompress(packed[: len(packed) // 2], MIB)
    with pytest.raises(TruncatedStream):
        decompress(packed[:-1], MIB)  # only the trailer is short
    with pytest.raises(TruncatedStream):
        decompress(b"", MIB)
    bad_crc = packed[:-8] + bytes(4) + packed[-4:]
    with pytest.raises(CorruptStream):
        decompress(bad_crc, MIB)
    with pytest.raises(CorruptStream):
        decompress(packed + b"trailing junk", MIB)
    with pytest.raises(CorruptStream):
        decompress(b"not gzip at all", MIB)
    assert issubclass(CorruptStream, TruncatedStream)


def test_decompress_prefix_of_partial_streams() -> None:
    payload = bytes(range(256)) * 4000
    packed = gzip.compress(payload)
    assert decompress_prefix(packed, 1000) == payload[:1000]
    assert decompress_prefix(packed[:2000], 500) == payload[:500]  # cut-off stream: no error
    short = decompress_prefix(packed[:600], 10**6)
    assert payload.startswith(short)
    assert decompress_prefix(packed, 10**7) == payload
    two = gzip.compress(b"ab") + gzip.compress(b"cdef")
    assert decompress_prefix(two, 4) == b"abcd"
    assert decompress_prefix(packed[:5], 100) == b""
    with pytest.raises(CorruptStream):
        decompress_prefix(b"\x1f\x8b\x09" + bytes(50), 10)


def test_gzip_bomb_stops_without_inflating_it() -> None:
    bomb = gzip_of_zeros(1024)  # 1 GiB of zeros in about 1 MB
    assert len(bomb) < 4 * MIB
    tracemalloc.start()
    try:
        with pytest.raises(OutputLimitExceeded):
            decompress(bomb, 64 * MIB)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # Only the limit's worth (plus a decode chunk) was ever held, not the gigabyte.
    assert peak < 3 * 64 * MIB


def test_load_nifti_bomb_after_a_valid_header() -> None:
    raw = nib.Nifti1Image(np.ones((8, 8, 8), np.uint8), np.eye(4)).to_bytes()
    tracemalloc.start()
    try:
        with pytest.raises(OutputLimitExceeded):
            load_nifti(gzip_of_zeros(1024, prefix=raw), max_output_bytes=len(raw) + MIB)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 64 * MIB


# --- streaming -----------------------------------------------------------------------------------


def _pieces(data: bytes, sizes: list[int]) -> list[bytes]:
    """`data` cut into consecutive pieces of the given sizes (cycled), as a body streams in."""
    out, start, index = [], 0, 0
    while start < len(data):
        out.append(data[start : start + sizes[index % len(sizes)]])
        start += sizes[index % len(sizes)]
        index += 1
    return out


def _gunzip(chunks: list[bytes], limit: int, piece_bytes: int = nifti.STREAM_PIECE_BYTES) -> bytes:
    pieces = list(iter_gunzip(chunks, limit, piece_bytes))
    assert all(0 < len(piece) <= piece_bytes for piece in pieces)
    return b"".join(pieces)


@pytest.mark.parametrize("sizes", [[1], [7, 1, 300], [4096], [MIB], [10 * MIB]], ids=str)
def test_iter_gunzip_decodes_any_chunking_as_decompress_does(sizes) -> None:
    payload = np.random.default_rng(3).integers(0, 40, 300_000, dtype=np.uint8).tobytes()
    a, b = b"first member " * 500, b"second member " * 900
    for stream, expected in [
        (gzip.compress(payload), payload),
        (gzip.compress(a) + gzip.compress(b), a + b),  # multi-member
        (gzip.compress(a) + bytes(5000), a),  # zero padding after a member
        (gzip.compress(a) + bytes(300) + gzip.compress(b), a + b),  # padding between members
        (gzip.compress(b""), b""),
    ]:
        decoded = _gunzip(_pieces(stream, sizes), 10 * MIB, piece_bytes=65536)
        assert decoded == expected == decompress(stream, 10 * MIB)


def test_iter_gunzip_limits_like_decompress() -> None:
    payload = bytes(range(256)) * 10_000
    stream = gzip.compress(payload)
    assert _gunzip(_pieces(stream, [999]), len(payload)) == payload
    with pytest.raises(OutputLimitExceeded):
        _gunzip(_pieces(stream, [999]), len(payload) - 1)
    with pytest.raises(ValueError):
        list(iter_gunzip([stream], -1))


def test_iter_gunzip_truncated_and_corrupt() -> None:
    packed = gzip.compress(b"some data " * 10000)
    for cut in (packed[: len(packed) // 2], packed[:-1], packed[:5]):
        with pytest.raises(TruncatedStream):
            _gunzip(_pieces(cut, [100]), MIB)
    with pytest.raises(TruncatedStream, match="empty"):
        _gunzip([], MIB)
    with pytest.raises(TruncatedStream, match="empty"):
        _gunzip([b""], MIB)
    bad_crc = packed[:-8] + bytes(4) + packed[-4:]
    for corrupt in (bad_crc, packed + b"trailing junk", packed + bytes(10) + b"junk", b"not gzip at all"):
        with pytest.raises(CorruptStream):
            _gunzip(_pieces(corrupt, [100]), MIB)


def test_iter_gunzip_bomb_stops_at_the_limit_holding_one_piece() -> None:
    bomb = gzip_of_zeros(1024)  # 1 GiB of zeros in about 1 MB
    tracemalloc.start()
    try:
        produced = 0
        with pytest.raises(OutputLimitExceeded):
            for piece in iter_gunzip(_pieces(bomb, [MIB]), 64 * MIB):
                produced += len(piece)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert produced <= 64 * MIB
    assert peak < 8 * MIB  # an input chunk and an output piece, not the limit's worth


@pytest.mark.parametrize(
    ("dtype", "slope", "inter"),
    [
        ("<i2", None, None),
        (">i2", 0.5, -10.0),
        ("<u1", 2.0, 0.0),
        ("<f4", None, None),
        (">f8", 1.5, 3.0),
        ("<i8", None, None),
        ("<u8", 3.0, 0.0),
        ("<i2", 3e38, 0.0),  # overflows float32: +-inf, as get_fdata(dtype=np.float32) gives
        ("<i2", 1e-45, 0.0),  # subnormal slope
    ],
)
def test_float32_voxels_scale_a_piece_as_get_fdata_scales_the_image(dtype, slope, inter) -> None:
    low = 0 if np.dtype(dtype).kind == "u" else -1000
    stored = np.random.default_rng(5).integers(low, 1000, (6, 5, 4)).astype(dtype)
    image = nib.Nifti1Image(stored, np.eye(4), dtype=stored.dtype)
    image.header.set_slope_inter(slope, inter)
    loaded = load_nifti(image.to_bytes())
    with np.errstate(over="ignore"):
        whole = loaded.get_fdata(dtype=np.float32)
        header = nib.Nifti1Header.from_fileobj(io.BytesIO(image.to_bytes()))
        # A piece that starts past the first voxel, as a chunk of the stream does.
        piece = float32_voxels(
            memoryview(stored.tobytes(order="F"))[8:], stored.dtype, *header.get_slope_inter()
        )
    assert piece.dtype == np.float32
    np.testing.assert_array_equal(piece, whole.ravel(order="F")[8 // stored.dtype.itemsize :])


# --- headers -------------------------------------------------------------------------------------


@pytest.mark.parametrize("nifti2", [False, True])
@pytest.mark.parametrize("big_endian", [False, True])
def test_parse_header_sniffs_version_and_byte_order(nifti2, big_endian) -> None:
    raw = make_good_nifti(False, nifti2=nifti2, big_endian=big_endian)[1]
    hdr = parse_header(raw[:1000])
    assert isinstance(hdr, nib.Nifti2Header if nifti2 else nib.Nifti1Header)
    assert type(hdr) is (nib.Nifti2Header if nifti2 else nib.Nifti1Header)
    assert hdr.endianness == (">" if big_endian else "<")
    assert hdr.get_data_shape() == (32, 32, 24)
    assert hdr.get_data_dtype() == np.dtype(np.int16).newbyteorder(">" if big_endian else "<")


def test_parse_header_errors() -> None:
    raw = make_good_nifti(False)[1]
    with pytest.raises(NotNifti):
        parse_header(b"plain text, " * 100)
    with pytest.raises(NotNifti):
        parse_header(b"")
    with pytest.raises(TruncatedStream):
        parse_header(raw[:200])
    with pytest.raises(BadHeader, match="sizeof_hdr"):
        parse_header(edit_header(raw, lambda h: h.__setitem__("sizeof_hdr", 999)))
    with pytest.raises(BadHeader, match="pair"):
        parse_header(edit_header(raw, lambda h: h.__setitem__("magic", b"ni1")))
    assert parse_header(raw, check=True).get_data_shape() == (32, 32, 24)


def test_parse_header_keeps_fields_unchecked() -> None:
    raw = edit_header(make_good_nifti(False)[1], lambda h: h["pixdim"].__setitem__(2, -3.0))
    assert parse_header(raw)["pixdim"][2] == -3.0  # check=False: nibabel's abs() fix not applied


# --- writing -------------------------------------------------------------------------------------


@pytest.mark.parametrize("compress", [False, True])
def test_to_nifti_bytes_round_trips(compress) -> None:
    img = load_nifti(MNI_T1.read_bytes())
    out = to_nifti_bytes(img, compress=compress)
    assert is_gzip(out) == compress
    back = load_nifti(out)
    np.testing.assert_array_equal(np.asanyarray(back.dataobj), np.asanyarray(img.dataobj))
    np.testing.assert_array_equal(back.affine, img.affine)
    if not compress:
        assert out == nib.load(MNI_T1).to_bytes()
    else:
        assert gzip.decompress(out) == to_nifti_bytes(img, compress=False)


def test_default_limit_is_sane() -> None:
    assert nifti.DEFAULT_MAX_OUTPUT_BYTES >= 2 * 1024**3
