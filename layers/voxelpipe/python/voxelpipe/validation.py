"""Validation of a NIfTI upload, knowing nothing of AWS.

Two stages, so the cheap one can run on a range read before the object is read at all:

* ``check_header(prefix, object_size, limits)``: the first HEADER_RANGE_BYTES of the object (or all
  of it) and its size -> HeaderSummary, or Rejected.
* ``check_volume_stream(chunks, object_size, limits)``: the whole object as it streams in ->
  VolumeSummary (header, sha256, value range), or Rejected.  It never holds the object or its
  decoded volume: the raw chunks are hashed as they pass, the header is checked from the first of
  them, the gzip stream is decoded incrementally in bounded pieces, and the voxel values are
  checked a bounded piece at a time (``VALUE_CHUNK_BYTES``); the header's extensions (at most
  ``Limits.max_vox_offset``) are read whole, as nibabel.load reads them, so that one it cannot read
  is ``bad_header`` here rather than a failure in Prepare.  Its peak memory does not depend on
  the upload (see ``voxelpipe.limits.VALIDATION_PEAK_BYTES``).  ``check_volume(data, limits)`` is
  the same check over bytes already in memory.

Every failure, whatever the bytes, is a ``Rejected`` carrying a ReasonCode and a sentence for the
uploader; anything else escaping would be a bug (MemoryError excepted: that is our problem, not
the upload's, so it is left to the retry machinery; so are errors reading the stream itself).

Policies decided here:

* An empty object is ``truncated``: it is what an interrupted or failed upload leaves, and
  "send it again" is the useful answer.
* Every voxel must be finite as the analyses will see it: scaled by scl_slope/scl_inter exactly as
  nibabel scales it, in float32, the precision the pipeline computes in
  (``img.get_fdata(dtype=np.float32)``, ``volume.voxel_data``).  A NaN or infinite stored value, or
  a finite one that scaling or float32 takes past +-3.4e38, rejects the volume
  (``non_finite_data``): scanners and reconstruction software never write them, and they would
  poison every statistic downstream.
* A constant volume (all voxels equal, e.g. all zero) is accepted: it is a valid image, and the
  analyses, not the validator, decide what is meaningful; the summary's data_min/data_max show it.
* A gzip stream may decode past the declared size (vox_offset + voxel bytes), but only by at most
  ``TRAILING_TOLERANCE_BYTES``, and, past the declared size, never beyond ``max_expansion_ratio``
  times the upload: breaking either is a ``decompression_bomb``, detected while decoding (the rest
  is never inflated).
"""

from __future__ import annotations

import hashlib
import io
import logging
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Final, Literal, NoReturn

import nibabel as nib
import numpy as np
from nibabel.nifti1 import data_type_codes
from nibabel.spatialimages import HeaderDataError

from voxelpipe import nifti
from voxelpipe.limits import HEADER_RANGE_BYTES, Limits
from voxelpipe.rejections import ReasonCode, Rejected

__all__ = [
    "TRAILING_TOLERANCE_BYTES",
    "VALUE_CHUNK_BYTES",
    "HeaderSummary",
    "VolumeSummary",
    "check_header",
    "check_volume",
    "check_volume_stream",
]

# Decoded bytes allowed past vox_offset + voxel data (some writers pad the end of the file).
TRAILING_TOLERANCE_BYTES: Final = 1024 * 1024
# Voxel bytes whose values are checked at a time: with their float copies (a float64 and a float32
# one for 1-byte voxels: 12 bytes a byte), this bounds the value check's memory.
VALUE_CHUNK_BYTES: Final = 1 << 20
# Bytes of an in-memory object handed to the streaming check at a time (check_volume).
_MEMORY_CHUNK_BYTES: Final = 1 << 20
# The largest finite float32: scaled values beyond it are infinite in the analyses.
_FLOAT32_MAX: Final = float(np.finfo(np.float32).max)

# NIfTI datatype codes we accept: plain integer and float scalars.  Complex, RGB, bit and
# float128 volumes are not something an anatomical/CT pipeline takes.
_SUPPORTED_DATATYPES: Final[dict[int, np.dtype[Any]]] = {
    2: np.dtype(np.uint8),
    4: np.dtype(np.int16),
    8: np.dtype(np.int32),
    16: np.dtype(np.float32),
    64: np.dtype(np.float64),
    256: np.dtype(np.int8),
    512: np.dtype(np.uint16),
    768: np.dtype(np.uint32),
    1024: np.dtype(np.int64),
    1280: np.dtype(np.uint64),
}
# xyzt_units spatial code -> millimetres per unit ('unknown' is taken as mm, as every tool does).
_MM_PER_UNIT: Final = {"meter": 1000.0, "mm": 1.0, "micron": 0.001, "unknown": 1.0}
# |det| relative to the product of the column norms: below this the axes are (near) collinear.
_MIN_AFFINE_INDEPENDENCE: Final = 1e-6
# nibabel reports the fixes it makes (e.g. "sform_code 178 not valid; setting to 0") on its logger;
# load_nifti reports them once, as nibabel.load would, so the header check keeps its copy quiet.
_QUIET_CHECKS: Final = logging.getLogger(f"{__name__}.nibabel_checks")
_QUIET_CHECKS.addHandler(logging.NullHandler())
_QUIET_CHECKS.propagate = False


@dataclass(frozen=True)
class HeaderSummary:
    """What the header says, once it has passed every check."""

    nifti_version: Literal[1, 2]
    compressed: bool
    shape: tuple[int, int, int]
    voxel_size_mm: tuple[float, float, float]
    datatype: str  # numpy name of the stored type, e.g. "int16" (byte order aside)
    declared_bytes: int  # vox_offset + voxel bytes: the decoded size of a well-formed file
    orientation: tuple[str, str, str]  # nibabel aff2axcodes, e.g. ("R", "A", "S")


@dataclass(frozen=True)
class VolumeSummary:
    """A volume that passed every check."""

    header: HeaderSummary
    sha256: str  # of the uploaded bytes, as stored
    data_min: float  # after scaling, in float32 as the analyses see it; equal to data_max when constant
    data_max: float


def _reject(reason: ReasonCode, detail: str) -> NoReturn:
    raise Rejected(reason, detail)


def _describe(head: bytes) -> str:
    """A guess at what a non-NIfTI file is, for the uploader's message."""
    for magic, what in (
        (b"\x89PNG", "a PNG image"),
        (b"\xff\xd8\xff", "a JPEG image"),
        (b"PK\x03\x04", "a ZIP archive"),
        (b"%PDF", "a PDF document"),
        (b"GIF8", "a GIF image"),
        (b"II*\x00", "a TIFF image"),
        (b"MM\x00*", "a TIFF image"),
    ):
        if head.startswith(magic):
            return what
    if head[128:132] == b"DICM":
        return "a DICOM file (upload DICOM series through the DICOM path)"
    try:
        head[:4096].decode("utf-8")
    except UnicodeDecodeError:
        return "binary data of an unknown kind"
    return "a text file"


def check_header(prefix: bytes, object_size: int, limits: Limits) -> HeaderSummary:
    """Validate an upload from its first bytes (`prefix`, maybe all of it) and its size.

    Raises Rejected with too_large, not_an_image, truncated, bad_header or unsupported_dimensions.
    A compressed upload's truncation beyond the header, and bombs, show only in check_volume_stream.
    """
    return _checked_header(prefix, object_size, limits)[0]


def _checked_header(
    prefix: bytes, object_size: int, limits: Limits
) -> tuple[HeaderSummary, nifti.NiftiHeader]:
    """check_header's summary, and the header as nibabel.load would hold it (with its fixes)."""
    try:
        return _check_header(prefix, object_size, limits)
    except (Rejected, MemoryError):
        raise
    except Exception as exc:  # a backstop: arbitrary bytes must not crash the caller
        raise Rejected(ReasonCode.BAD_HEADER, f"The NIfTI header could not be read ({exc}).") from exc


def _check_header(prefix: bytes, object_size: int, limits: Limits) -> tuple[HeaderSummary, nifti.NiftiHeader]:
    if object_size <= 0 or not prefix:
        _reject(ReasonCode.TRUNCATED, "The file is empty; the upload may have been interrupted.")
    if object_size > limits.max_upload_bytes:
        _reject(
            ReasonCode.TOO_LARGE,
            f"The file is {object_size} bytes; the limit is {limits.max_upload_bytes} bytes.",
        )
    compressed = nifti.is_gzip(prefix)
    whole = len(prefix) >= object_size
    if compressed:
        try:
            # Enough for a NIfTI-2 header; a NIfTI-1 one is shorter.
            head = nifti.decompress_prefix(prefix, nifti.NIFTI2_HEADER_SIZE)
            if len(head) < nifti.NIFTI2_HEADER_SIZE and whole:
                # Short output: a complete tiny stream, or one cut off early (which this raises for).
                nifti.decompress(prefix, nifti.NIFTI2_HEADER_SIZE)
        except nifti.CorruptStream as exc:
            _reject(ReasonCode.TRUNCATED, f"The gzip data is corrupt ({exc}).")
        except nifti.TruncatedStream as exc:
            _reject(
                ReasonCode.TRUNCATED, f"The gzip data ends early ({exc}); the upload may have been cut off."
            )
    else:
        head = prefix
    try:
        hdr = nifti.parse_header(head)
    except nifti.NotNifti:
        packed = " (gzip-compressed)" if compressed else ""
        _reject(
            ReasonCode.NOT_AN_IMAGE,
            f"The file{packed} looks like {_describe(head)}, not a NIfTI-1/NIfTI-2 image.",
        )
    except nifti.TruncatedStream as exc:
        if not whole:
            # The range read was too short to hold a header: no real header needs that much.
            _reject(ReasonCode.BAD_HEADER, f"No NIfTI header in the first {len(prefix)} bytes ({exc}).")
        _reject(ReasonCode.TRUNCATED, f"The file ends before its NIfTI header does ({exc}).")
    except nifti.BadHeader as exc:
        _reject(ReasonCode.BAD_HEADER, f"The NIfTI header is invalid: {exc}.")
    return _check_fields(hdr, compressed, object_size, limits)


def _check_fields(
    hdr: nifti.NiftiHeader, compressed: bool, object_size: int, limits: Limits
) -> tuple[HeaderSummary, nifti.NiftiHeader]:
    version: Literal[1, 2] = 2 if isinstance(hdr, nib.Nifti2Header) else 1
    header_size = nifti.NIFTI2_HEADER_SIZE if version == 2 else nifti.NIFTI1_HEADER_SIZE

    def bad(detail: str) -> NoReturn:
        _reject(ReasonCode.BAD_HEADER, f"The NIfTI header is invalid: {detail}.")

    dim = [int(d) for d in hdr["dim"]]
    ndim = dim[0]
    if not 1 <= ndim <= 7:
        bad(f"dim[0] is {ndim}, not 1 to 7")
    dims = dim[1 : ndim + 1]
    if any(d < 0 for d in dims):
        bad(f"negative dimensions {dims}")
    code = int(hdr["datatype"])
    if code not in data_type_codes.code:
        bad(f"unknown datatype code {code}")
    if code not in _SUPPORTED_DATATYPES:
        bad(f"datatype {data_type_codes.label[code]} is not supported (integer or float voxels only)")
    offset_value = float(hdr["vox_offset"])
    if not math.isfinite(offset_value) or offset_value != int(offset_value):
        bad(f"vox_offset {offset_value} is not a byte offset")
    vox_offset = int(offset_value)
    if vox_offset < header_size + 4:
        bad(f"vox_offset {vox_offset} is inside the {header_size}-byte header")
    if vox_offset > limits.max_vox_offset:
        _reject(
            ReasonCode.TOO_LARGE,
            f"The header extensions take {vox_offset} bytes; the limit is {limits.max_vox_offset}.",
        )

    if ndim < 3:
        _reject(ReasonCode.UNSUPPORTED_DIMENSIONS, f"The image is {ndim}-D {dims}; a 3-D volume is required.")
    if ndim > 4 or (ndim == 4 and dims[3] != 1):
        _reject(
            ReasonCode.UNSUPPORTED_DIMENSIONS,
            f"The image has shape {dims}; a single 3-D volume is required (one volume per upload).",
        )
    nx, ny, nz = dims[:3]
    if min(nx, ny, nz) < 2:
        _reject(
            ReasonCode.UNSUPPORTED_DIMENSIONS, f"The volume {dims[:3]} has an axis shorter than 2 voxels."
        )
    if max(nx, ny, nz) > limits.max_dim:
        _reject(
            ReasonCode.UNSUPPORTED_DIMENSIONS,
            f"The volume {dims[:3]} has an axis longer than {limits.max_dim} voxels.",
        )
    voxels = nx * ny * nz
    if voxels > limits.max_voxels:
        _reject(
            ReasonCode.TOO_LARGE,
            f"The volume has {voxels} voxels; the limit is {limits.max_voxels}.",
        )

    pixdim = [float(p) for p in hdr["pixdim"][1:4]]
    if not all(math.isfinite(p) and p > 0 for p in pixdim):
        bad(f"voxel sizes (pixdim) {pixdim} must be finite and positive")
    slope, inter = float(hdr["scl_slope"]), float(hdr["scl_inter"])
    # NIfTI: a slope of 0 or NaN means "no scaling" (the intercept is then ignored).
    if slope != 0 and not math.isnan(slope) and not (math.isfinite(slope) and math.isfinite(inter)):
        bad(f"scaling scl_slope={slope}, scl_inter={inter} is not finite")

    # Let nibabel judge the rest exactly as nibabel.load will (it also applies its fixes, e.g. qfac
    # 0 -> 1, which the affine below must see too).
    fixed = hdr.copy()  # type: ignore[no-untyped-call]
    try:
        fixed.check_fix(logger=_QUIET_CHECKS)
        affine = fixed.get_best_affine()
    except HeaderDataError as exc:
        bad(str(exc))
    if not np.isfinite(affine).all():
        bad("the voxel-to-world affine has non-finite entries")
    axes = affine[:3, :3]
    with np.errstate(all="ignore"):  # absurd magnitudes overflow to inf/nan, judged just below
        norms = np.linalg.norm(axes, axis=0)
        independence = abs(np.linalg.det(axes)) / np.prod(norms)
    if not (np.isfinite(norms).all() and (norms > 0).all() and independence >= _MIN_AFFINE_INDEPENDENCE):
        bad("the voxel-to-world affine is singular or out of range")

    dtype = _SUPPORTED_DATATYPES[code]
    itemsize = dtype.itemsize
    declared = vox_offset + voxels * itemsize
    if not compressed and object_size < declared:
        _reject(
            ReasonCode.TRUNCATED,
            f"The file is {object_size} bytes but its header declares {declared}; "
            "the upload may have been cut off.",
        )
    mm = _MM_PER_UNIT.get(nifti.xyzt_unit_names(fixed)[0], 1.0)
    orientation = nib.aff2axcodes(affine)  # type: ignore[no-untyped-call]
    summary = HeaderSummary(
        nifti_version=version,
        compressed=compressed,
        shape=(nx, ny, nz),
        voxel_size_mm=(pixdim[0] * mm, pixdim[1] * mm, pixdim[2] * mm),
        datatype=dtype.name,
        declared_bytes=declared,
        orientation=(str(orientation[0]), str(orientation[1]), str(orientation[2])),
    )
    return summary, fixed


def check_volume(data: bytes, limits: Limits) -> VolumeSummary:
    """check_volume_stream over an object already in memory (tests, fixtures, small objects)."""
    view = memoryview(data)
    chunks = (view[start : start + _MEMORY_CHUNK_BYTES] for start in range(0, len(view), _MEMORY_CHUNK_BYTES))
    return check_volume_stream(chunks, len(data), limits)


def check_volume_stream(chunks: Iterable[nifti.Chunk], object_size: int, limits: Limits) -> VolumeSummary:
    """Validate a whole upload of `object_size` bytes that arrives in `chunks`, in order.

    check_header on its first bytes, then the decoded stream under the bomb limit
    (decompression_bomb, truncated), then the voxel values (non_finite_data), a bounded piece at a
    time: neither the object nor its volume is ever held whole.  Returns the header's summary, the
    upload's sha256 and its value range.  An error raised by `chunks` itself (a failed read) is
    not the upload's fault: it propagates as it is.
    """
    source = _HashedSource(chunks)
    try:
        return _check_stream(source, object_size, limits)
    except (Rejected, MemoryError):
        raise
    except Exception as exc:
        if exc is source.read_error:
            raise
        # A backstop: arbitrary bytes must not crash the caller.
        raise Rejected(ReasonCode.BAD_HEADER, f"The NIfTI file could not be read ({exc}).") from exc


class _HashedSource:
    """The upload's chunks, in order, hashed (sha256) and counted as they pass."""

    def __init__(self, chunks: Iterable[nifti.Chunk]) -> None:
        self._chunks = iter(chunks)
        self._digest = hashlib.sha256()
        self._head: list[nifti.Chunk] = []  # read for the header; `chunks` hands them out again
        self.size = 0
        self.read_error: Exception | None = None

    def _next(self) -> nifti.Chunk | None:
        try:
            chunk = next(self._chunks)
        except StopIteration:
            return None
        except Exception as exc:
            self.read_error = exc
            raise
        self._digest.update(chunk)
        self.size += len(chunk)
        return chunk

    def prefix(self, n: int) -> bytes:
        """The first `n` bytes (all of them if the object is shorter), without consuming them."""
        held = sum(len(chunk) for chunk in self._head)
        while held < n and (chunk := self._next()) is not None:
            self._head.append(chunk)
            held += len(chunk)
        return b"".join(self._head)[:n]

    def chunks(self) -> Iterator[nifti.Chunk]:
        """Every chunk, from the first (those `prefix` read included), each once."""
        head, self._head = self._head, []
        yield from head
        while (chunk := self._next()) is not None:
            yield chunk

    def hexdigest(self) -> str:
        return self._digest.hexdigest()


def _check_stream(source: _HashedSource, object_size: int, limits: Limits) -> VolumeSummary:
    summary, header = _checked_header(source.prefix(HEADER_RANGE_BYTES), object_size, limits)
    declared = summary.declared_bytes
    values = _ValueCheck(header, declared)
    decoded: Iterable[nifti.Chunk] = source.chunks()
    if summary.compressed:
        # Output up to the declared size is what the header promised (and Limits bounded); past it,
        # only a little padding, and never beyond the expansion ratio.
        cap = min(
            declared + TRAILING_TOLERANCE_BYTES, max(declared, int(object_size * limits.max_expansion_ratio))
        )
        decoded = nifti.iter_gunzip(decoded, max_output_bytes=cap)
    try:
        for piece in decoded:
            values.feed(piece)
    except nifti.OutputLimitExceeded:
        _reject(
            ReasonCode.DECOMPRESSION_BOMB,
            f"The gzip data expands beyond the {declared} bytes its header declares "
            "(a decompression bomb); it was not decoded further.",
        )
    except nifti.CorruptStream as exc:
        _reject(ReasonCode.TRUNCATED, f"The gzip data is corrupt ({exc}); upload the file again.")
    except nifti.TruncatedStream as exc:
        _reject(ReasonCode.TRUNCATED, f"The file ends early ({exc}); the upload may have been cut off.")
    except nifti.BadHeader as exc:
        _reject(ReasonCode.BAD_HEADER, f"The NIfTI header's extensions are invalid: {exc}.")
    if values.position < declared:
        _reject(
            ReasonCode.TRUNCATED,
            f"The file ends after {values.position} of the {declared} bytes its header declares; "
            "the upload may have been cut off.",
        )
    data_min, data_max = values.value_range()
    return VolumeSummary(header=summary, sha256=source.hexdigest(), data_min=data_min, data_max=data_max)


class _ValueCheck:
    """Follows the decoded stream: counts its bytes and checks the voxel values as they pass.

    Values are checked VALUE_CHUNK_BYTES of voxels at a time, as the analyses will see them:
    nibabel's scaling, in float32 (nifti.float32_voxels).  Min and max are kept; NaN/Inf are counted.
    """

    def __init__(self, header: nifti.NiftiHeader, declared: int) -> None:
        fields: Any = header  # nibabel headers are untyped
        self._dtype: np.dtype[Any] = fields.get_data_dtype()  # byte order included
        self._slope, self._inter = fields.get_slope_inter()  # (None, None) when unscaled
        self._start = int(float(header["vox_offset"]))
        # The header and its extensions (bounded by Limits.max_vox_offset), read once whole as
        # nibabel.load reads them: an extension it cannot read must not wait for Prepare.
        self._head = io.BytesIO()
        self._end = declared
        self._voxels = (declared - self._start) // self._dtype.itemsize
        self._partial = bytearray()  # the start of a voxel split between two pieces
        self._low, self._high = math.inf, -math.inf
        self._stored_non_finite = 0  # NaN/Inf as stored
        self._overflowed = 0  # finite as stored, infinite once scaled in float32
        self.position = 0  # decoded bytes seen

    def feed(self, piece: nifti.Chunk) -> None:
        view = memoryview(piece).cast("B")
        begin = self.position
        self.position += len(view)
        if begin < self._start:
            self._head.write(view[: self._start - begin])
            if self.position >= self._start:
                nifti.header_with_extensions(self._head)  # BadHeader
                self._head = io.BytesIO()
        first, last = max(self._start - begin, 0), min(self._end - begin, len(view))
        if first < last:
            self._voxel_bytes(view[first:last])

    def _voxel_bytes(self, data: memoryview) -> None:
        itemsize = self._dtype.itemsize
        if self._partial:
            need = itemsize - len(self._partial)
            self._partial += data[:need]
            data = data[need:]
            if len(self._partial) < itemsize:
                return
            self._check(bytes(self._partial))
            self._partial.clear()
        whole = len(data) - len(data) % itemsize
        step = VALUE_CHUNK_BYTES - VALUE_CHUNK_BYTES % itemsize
        for start in range(0, whole, step):
            self._check(data[start : min(start + step, whole)])
        self._partial += data[whole:]

    def _check(self, buffer: nifti.Chunk) -> None:
        with np.errstate(over="ignore", invalid="ignore"):  # overflow is what is looked for here
            values = nifti.float32_voxels(buffer, self._dtype, self._slope, self._inter)
        low, high = float(values.min()), float(values.max())  # NaN propagates; +-Inf shows at an end
        if math.isfinite(low) and math.isfinite(high):
            self._low, self._high = min(self._low, low), max(self._high, high)
            return
        non_finite = values.size - int(np.count_nonzero(np.isfinite(values)))
        stored = np.frombuffer(buffer, self._dtype)
        stored_non_finite = (
            stored.size - int(np.count_nonzero(np.isfinite(stored))) if stored.dtype.kind == "f" else 0
        )
        self._stored_non_finite += stored_non_finite
        self._overflowed += non_finite - stored_non_finite

    def value_range(self) -> tuple[float, float]:
        """Min and max after scaling; rejects NaN/Inf as stored or after scaling (non_finite_data)."""
        if self._stored_non_finite:
            _reject(
                ReasonCode.NON_FINITE_DATA,
                f"The volume has {self._stored_non_finite} NaN or infinite voxels (of {self._voxels}); "
                "a volume must hold finite values.",
            )
        if self._overflowed:
            slope, inter = float(self._slope or 1.0), float(self._inter or 0.0)
            scaled = (
                ""
                if (slope, inter) == (1.0, 0.0)
                else f", once scaled by scl_slope={slope:g} and scl_inter={inter:g},"
            )
            _reject(
                ReasonCode.NON_FINITE_DATA,
                f"The volume has {self._overflowed} voxels (of {self._voxels}) whose values{scaled} exceed "
                f"what float32, the precision the analyses compute in, can hold (magnitudes up to "
                f"{_FLOAT32_MAX:.3g}); a volume must hold values within that range.",
            )
        return self._low, self._high
