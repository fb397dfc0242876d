"""One DICOM object's header: is it DICOM, an image, decodable, and safe to process?

``read_instance_header(data)`` reads the header only (the pixels are located, never decoded) and
returns an ``InstanceSummary`` or raises ``Rejected``:

* ``not_dicom``: no ``DICM`` preamble and no plausible preamble-less header, or a header that
  does not parse;
* ``truncated``: the header, or the pixel data it declares, is cut short;
* ``no_pixel_data``: a DICOM object with no Pixel Data (7FE0,0010): SR, RT plan, DICOMDIR...
  Float/Double Float Pixel Data (parametric maps) count as none: we take integer images only;
* ``unsupported_transfer_syntax``: pixels encoded in something we cannot decode (MPEG/H.264/HEVC,
  JPEG 2000 Part 2, private syntaxes). Decodable: the native syntaxes (little/big endian,
  deflated) and, through the pylibjpeg plugins only, JPEG baseline/extended/lossless, JPEG-LS,
  JPEG 2000 (and HTJ2K) and RLE;
* ``burned_in_phi``: Burned In Annotation (0028,0301) is YES, under the default ``"reject"``
  policy (``"flag"`` lets it through with ``burned_in_annotation=True`` for the caller to route);
* ``bad_header``: a Rescale Slope/Intercept (top level, or an enhanced object's per-frame or
  shared Pixel Value Transformation) or Dose Grid Scaling that cannot be applied: empty, not one
  number, not finite, beyond float32, or a zero slope (``voxelpipe.dicom.values``).  Whether
  the scaled values overflow float32 only the pixels tell: ``assemble_series`` checks that;
* ``decompression_bomb``: a deflated dataset that inflates past 1 MiB and past Limits' expansion
  ratio, found by inflating it piece by piece (keeping nothing) before pydicom, which inflates it
  whole, reads it.

pydicom is the only parser.  It reads the header up to the top-level pixel element with
``specific_tags`` (the ~30 top-level elements the summary needs are kept, the rest skipped) and a
``stop_when`` that stops there: pydicom calls it with the element's tag, VR and length while the
stream stands at the element's value, which locates the pixels without reading them.  For a
``DICM`` file whose meta names a standard, non-deflated syntax we call the readers
``pydicom.filereader.read_partial`` (what ``dcmread`` runs) calls -- ``read_preamble``, then
``read_dataset`` for the file meta and for the dataset -- without its FileDataset wrappers, a third
of the time on a series; anything else goes through ``read_partial`` itself.  The kept values are
the raw bytes pydicom read (``RawDataElement``), turned into numbers by ``values``: pydicom's value
conversion costs more than the parse, for a few numbers from each header of a 200-file series.

pydicom reads what it can of a cut-off object without complaint, so when no pixel element turns
up (or the parse fails), the object is read again through a stream that notes whether pydicom
ran out of bytes: that is ``truncated``, not ``no_pixel_data`` or ``not_dicom``.

With ``object_size`` larger than ``len(data)`` (a range read at ingest) a header that runs past
the prefix raises ``NeedMoreData`` instead of a verdict: fetch more, or the whole object.  The
object's size alone tells whether native pixel data is cut off, so a range read reaches the same
verdict as the whole object (compressed frames are only checked when decoded).
"""

from __future__ import annotations

import io
import warnings
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Final, Literal, NoReturn, TypeAlias

import pydicom
from pydicom import uid as _uid
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.filereader import read_dataset, read_partial, read_preamble
from pydicom.tag import BaseTag

from voxelpipe.dicom.values import (
    first_number,
    integer,
    numbers,
    read_rescale,
    scale_factor,
    text,
    ushort,
    vector,
)
from voxelpipe.limits import HEADER_RANGE_BYTES, Limits
from voxelpipe.rejections import ReasonCode, Rejected

__all__ = [
    "Buffer",
    "BurnedInPolicy",
    "InstanceSummary",
    "NeedMoreData",
    "ParsedInstance",
    "PixelLocation",
    "check_policy",
    "first_item",
    "frame_rescales",
    "looks_like_dicom",
    "parse_instance",
    "raw_value",
    "read_instance_header",
    "supported_transfer_syntaxes",
]

BurnedInPolicy: TypeAlias = Literal["reject", "flag"]
Buffer: TypeAlias = bytes | bytearray | memoryview

# Tags, as ints (group << 16 | element).
META_GROUP_LENGTH: Final = 0x00020000
TRANSFER_SYNTAX: Final = 0x00020010
IMAGE_TYPE: Final = 0x00080008
SOP_CLASS: Final = 0x00080016
SOP_INSTANCE: Final = 0x00080018
MODALITY: Final = 0x00080060
SLICE_THICKNESS: Final = 0x00180050
SPACING_BETWEEN_SLICES: Final = 0x00180088
STUDY_UID: Final = 0x0020000D
SERIES_UID: Final = 0x0020000E
INSTANCE_NUMBER: Final = 0x00200013
POSITION: Final = 0x00200032
ORIENTATION: Final = 0x00200037
FRAME_OF_REFERENCE: Final = 0x00200052
IMAGES_IN_ACQUISITION: Final = 0x00201002
SAMPLES_PER_PIXEL: Final = 0x00280002
PHOTOMETRIC: Final = 0x00280004
NUMBER_OF_FRAMES: Final = 0x00280008
ROWS: Final = 0x00280010
COLUMNS: Final = 0x00280011
PIXEL_SPACING: Final = 0x00280030
BITS_ALLOCATED: Final = 0x00280100
BITS_STORED: Final = 0x00280101
PIXEL_REPRESENTATION: Final = 0x00280103
BURNED_IN: Final = 0x00280301
RESCALE_INTERCEPT: Final = 0x00281052
RESCALE_SLOPE: Final = 0x00281053
MODALITY_LUT: Final = 0x00283000
GRID_FRAME_OFFSETS: Final = 0x3004000C
DOSE_GRID_SCALING: Final = 0x3004000E
SHARED_GROUPS: Final = 0x52009229
PER_FRAME_GROUPS: Final = 0x52009230
FLOAT_PIXEL_DATA: Final = 0x7FE00008
DOUBLE_PIXEL_DATA: Final = 0x7FE00009
PIXEL_DATA: Final = 0x7FE00010
_PIXEL_TAGS: Final = frozenset({FLOAT_PIXEL_DATA, DOUBLE_PIXEL_DATA, PIXEL_DATA})
_UNDEFINED: Final = 0xFFFFFFFF  # an undefined length

# What the summary needs: the top-level elements pydicom keeps (it skips the rest).
_WANTED: Final = frozenset(
    {
        IMAGE_TYPE,
        SOP_CLASS,
        SOP_INSTANCE,
        MODALITY,
        SLICE_THICKNESS,
        SPACING_BETWEEN_SLICES,
        STUDY_UID,
        SERIES_UID,
        INSTANCE_NUMBER,
        POSITION,
        ORIENTATION,
        FRAME_OF_REFERENCE,
        IMAGES_IN_ACQUISITION,
        SAMPLES_PER_PIXEL,
        PHOTOMETRIC,
        NUMBER_OF_FRAMES,
        ROWS,
        COLUMNS,
        PIXEL_SPACING,
        BITS_ALLOCATED,
        BITS_STORED,
        PIXEL_REPRESENTATION,
        BURNED_IN,
        RESCALE_INTERCEPT,
        RESCALE_SLOPE,
        MODALITY_LUT,
        GRID_FRAME_OFFSETS,
        DOSE_GRID_SCALING,
        SHARED_GROUPS,
        PER_FRAME_GROUPS,
    }
)
_HEADER_TAGS: Final[list[BaseTag | int]] = sorted(_WANTED)  # pydicom's specific_tags
_ORDERS: Final[tuple[Literal["little", "big"], ...]] = ("little", "big")

_NATIVE_SYNTAXES: Final = frozenset(
    {
        _uid.ImplicitVRLittleEndian,
        _uid.ExplicitVRLittleEndian,
        _uid.ExplicitVRBigEndian,
        _uid.DeflatedExplicitVRLittleEndian,
    }
)
# Compressed syntaxes the pylibjpeg plugins decode (pylibjpeg-libjpeg, -openjpeg, -rle).  pydicom
# could also use Pillow or GDCM for some; we name the plugin on every decode so it never does.
_PYLIBJPEG_SYNTAXES: Final = (
    _uid.JPEGBaseline8Bit,
    _uid.JPEGExtended12Bit,
    _uid.JPEGLossless,
    _uid.JPEGLosslessSV1,
    _uid.JPEGLSLossless,
    _uid.JPEGLSNearLossless,
    _uid.JPEG2000Lossless,
    _uid.JPEG2000,
    _uid.HTJ2KLossless,
    _uid.HTJ2KLosslessRPCL,
    _uid.HTJ2K,
    _uid.RLELossless,
)


@cache
def supported_transfer_syntaxes() -> frozenset[str]:
    """Transfer syntax UIDs whose pixels we decode: native ones, and those pylibjpeg's plugins take."""
    from pydicom.pixels.decoders.base import get_decoder

    ok = set(_NATIVE_SYNTAXES)
    for syntax in _PYLIBJPEG_SYNTAXES:
        try:
            decoder = get_decoder(syntax)
        except NotImplementedError:
            continue
        if "pylibjpeg" in decoder.available_plugins:
            ok.add(syntax)
    return frozenset(ok)


class NeedMoreData(Exception):
    """The header continues past the bytes given (a range read): fetch more, or the whole object."""


@dataclass(frozen=True)
class InstanceSummary:
    """What the header of one image object says, once it has passed the per-object checks."""

    sop_instance_uid: str
    sop_class_uid: str
    series_instance_uid: str
    study_instance_uid: str
    frame_of_reference_uid: str | None
    modality: str
    transfer_syntax: str
    rows: int
    columns: int
    frames: int
    samples_per_pixel: int
    photometric_interpretation: str
    bits_allocated: int
    bits_stored: int
    pixel_representation: int  # 0 unsigned, 1 two's complement
    image_position: tuple[float, float, float] | None  # (0020,0032), mm, LPS
    image_orientation: tuple[float, float, float, float, float, float] | None  # (0020,0037)
    pixel_spacing: tuple[float, float] | None  # (row spacing, column spacing), mm
    slice_thickness: float | None
    rescale_slope: float
    rescale_intercept: float
    instance_number: int | None
    burned_in_annotation: bool | None  # None: the attribute is absent
    enhanced: bool  # per-frame functional groups carry the geometry (enhanced multi-frame)
    images_in_acquisition: int | None  # (0020,1002): how many images the acquisition made


@dataclass(frozen=True)
class PixelLocation:
    """Where the Pixel Data element's value lies in the object's bytes."""

    tag: int  # PIXEL_DATA, or FLOAT_/DOUBLE_PIXEL_DATA
    offset: int  # first byte of the value
    length: int | None  # None: undefined length (encapsulated, compressed frames)


@dataclass(frozen=True, eq=False)
class ParsedInstance:
    """A parsed header plus what decoding needs; series assembly works from these."""

    data: Buffer
    summary: InstanceSummary
    pixels: PixelLocation | None  # None: no pixel data, or not locatable (deflated: see `dataset`)
    little_endian: bool
    # pydicom's parse: the header's wanted elements (functional groups included), up to the
    # pixels; a deflated object's whole dataset, pixels included.
    dataset: Dataset
    grid_frame_offsets: tuple[float, ...] | None  # RT Dose frames along the normal
    dose_grid_scaling: float | None
    spacing_between_slices: float | None
    image_type: tuple[str, ...]
    has_modality_lut: bool

    @property
    def has_pixel_data(self) -> bool:
        if self.pixels is not None:
            return self.pixels.tag == PIXEL_DATA
        return PIXEL_DATA in self.dataset


# --- sniffing -------------------------------------------------------------------------------------


def looks_like_dicom(data: Buffer) -> bool:
    """A ``DICM`` preamble, or a preamble-less dataset that starts with a plausible element.

    Preamble-less objects (ACR-NEMA style, or a raw dataset) must start with an element of group
    0002 or 0008 in either byte order, with a valid explicit VR or a length that fits the object.
    """
    head = bytes(data[:132])
    if len(head) >= 132 and head[128:132] == b"DICM":
        return True
    if len(head) < 8:
        return False
    for order in _ORDERS:
        if int.from_bytes(head[0:2], order) not in (0x0002, 0x0008):
            continue
        vr = head[4:6]
        if vr.isalpha() and vr.isupper():
            return True
        # Implicit VR is little endian only.
        if order == "little" and int.from_bytes(head[4:8], order) < len(data):
            return True
    return False


def _describe(data: Buffer) -> str:
    head = bytes(data[:8])
    kinds = {
        b"\x1f\x8b": "a gzip stream (upload the DICOM files themselves)",
        b"PK\x03\x04": "a ZIP archive (upload a series archive as a .zip)",
        b"\x89PNG": "a PNG image",
        b"%PDF": "a PDF document",
        b"\xff\xd8\xff": "a JPEG image",
    }
    for magic, kind in kinds.items():
        if head.startswith(magic):
            return kind
    if not data:
        return "an empty file"
    sample = bytes(data[:512])
    if all(32 <= c < 127 or c in (9, 10, 13) for c in sample):
        return "text"
    return "something else"


def _reject(reason: ReasonCode, detail: str) -> NoReturn:
    raise Rejected(reason, detail)


# --- reading the header with pydicom --------------------------------------------------------------


def raw_value(ds: Dataset, tag: int) -> bytes | None:
    """An element's value as the raw bytes the file holds (None: the element is absent)."""
    return _raw(ds.get_item(tag), ds)


def _raw(elem: DataElement | RawDataElement | None, ds: Dataset) -> bytes | None:
    if elem is None:
        return None
    if isinstance(elem, RawDataElement):
        return elem.value or b""
    value = elem.value
    # Already converted (pydicom read it, or a caller built the dataset): render it back.
    if value is None:
        return b""
    if isinstance(value, bytes):
        return value
    if elem.VR == "SQ":
        return b""
    if elem.VR in ("US", "SS") and isinstance(value, int):
        # Rendered little endian: _instance reads them so for a dataset without an original encoding.
        order: Literal["little", "big"] = "big" if ds.original_encoding[1] is False else "little"
        return value.to_bytes(2, order, signed=value < 0)
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return "\\".join(str(v) for v in value).encode("latin-1", "replace")
    return str(value).encode("latin-1", "replace")


class _Tracked(io.BytesIO):
    """The object's bytes for pydicom, noting a read that comes back short: the bytes ran out.

    (A short read at offset 0 or 128 is pydicom looking for a preamble in a small object.)
    """

    def __init__(self, data: Buffer) -> None:
        super().__init__(data)
        self.size = memoryview(data).nbytes
        self.short_read = False

    def read(self, size: int | None = -1, /) -> bytes:
        chunk = super().read(size)
        if size is not None and 0 < len(chunk) < size and self.tell() - len(chunk) not in (0, 128):
            self.short_read = True
        return chunk


@dataclass(frozen=True)
class _Header:
    ds: Dataset  # the wanted top-level elements, unconverted
    meta: Dataset  # the file meta information (empty: none)
    syntax: str
    pixels: PixelLocation | None  # the top-level pixel element pydicom stopped at


def _read_header(stream: io.BytesIO) -> _Header:
    """pydicom's parse of the header up to the pixel element. Raises whatever pydicom raises."""
    found: list[PixelLocation] = []

    def at_pixels(tag: BaseTag, vr: str | None, length: int) -> bool:
        # pydicom calls this for each top-level element, the stream at the element's value.
        if tag in _PIXEL_TAGS:
            found.append(PixelLocation(int(tag), stream.tell(), None if length == _UNDEFINED else length))
            return True
        return False

    # pydicom warns about every oddity it tolerates; the verdict is what we report.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        header = _read_part10(stream, at_pixels)
        if header is None:
            found.clear()
            stream.seek(0)
            ds = read_partial(stream, at_pixels, force=True, specific_tags=_HEADER_TAGS)
            meta = getattr(ds, "file_meta", None) or Dataset()
            header = _Header(ds, meta, _syntax(meta, ds), None)
    # A deflated dataset is read from an inflated copy: its pixels have no offset in our bytes.
    located = found and header.syntax != _uid.DeflatedExplicitVRLittleEndian
    return _Header(header.ds, header.meta, header.syntax, found[-1] if located else None)


def _read_part10(stream: io.BytesIO, stop_when: Callable[[BaseTag, str | None, int], bool]) -> _Header | None:
    """The common case, a ``DICM`` file whose meta names a standard, non-deflated syntax, read the
    way ``read_partial`` reads it: ``read_preamble``, then ``read_dataset`` for the file meta and
    for the dataset.  It skips what read_partial adds (FileMetaDataset and FileDataset wrappers,
    value conversions): a third of the time on a series' headers.

    None for anything else (or any error): read_partial reads it from the start.
    """
    after_meta: list[int] = []

    def past_meta(tag: BaseTag, vr: str | None, length: int) -> bool:
        if tag >> 16 == 0x0002:
            return False
        after_meta.append(tag)
        return True

    try:
        if read_preamble(stream, force=True) is None:
            return None
        meta = read_dataset(stream, is_implicit_VR=False, is_little_endian=True, stop_when=past_meta)
        raw = raw_value(meta, TRANSFER_SYNTAX)
        syntax = _uid.UID(text(raw)) if raw else None
        if syntax is None or not syntax.is_transfer_syntax or syntax.is_deflated:
            return None
        if after_meta and after_meta[-1] >> 16 == 0x0000:
            return None  # a command set (always implicit VR), which read_partial reads apart
        ds = read_dataset(
            stream,
            syntax.is_implicit_VR,
            syntax.is_little_endian,
            stop_when=stop_when,
            specific_tags=_HEADER_TAGS,
        )
    except MemoryError:
        raise
    except Exception:
        return None
    return _Header(ds, meta, str(syntax), None)


def _syntax(meta: Dataset, ds: Dataset) -> str:
    """The transfer syntax: the file meta's, else the encoding pydicom found the dataset in."""
    raw = raw_value(meta, TRANSFER_SYNTAX)
    if raw:
        return text(raw)
    implicit, little = ds.original_encoding
    if implicit:
        return _uid.ImplicitVRLittleEndian
    return _uid.ExplicitVRLittleEndian if little is not False else _uid.ExplicitVRBigEndian


def _ran_out(stream: _Tracked, header: _Header | None) -> bool:
    """Whether pydicom ran out of bytes: a short read, a skip past the end, a value cut short."""
    if stream.short_read or stream.tell() > stream.size:
        return True
    if header is None:
        return stream.tell() >= stream.size  # it failed at the end of the bytes
    elem = header.meta.get_item(META_GROUP_LENGTH)
    if elem is not None:
        # The length the file meta information gives itself says whether it is all there.
        start = elem.value_tell if isinstance(elem, RawDataElement) else elem.file_tell
        try:
            length = header.meta.FileMetaInformationGroupLength
        except Exception:  # a value pydicom cannot convert: no length to go by
            length = 0
        if not isinstance(length, int) or (start or 0) + 4 + length > stream.size:
            return True
    # A value that starts at the very end reads back empty (not short): compare with its length,
    # or, for one pydicom has converted (the file meta's transfer syntax), take it as cut off.
    return any(
        (elem.value is not None and elem.length != _UNDEFINED and len(elem.value) < elem.length)
        if isinstance(elem, RawDataElement)
        else (elem.file_tell == stream.size and elem.is_empty)
        for group in (header.meta, header.ds)
        for elem in group.elements()
    )


def _read_whole(data: Buffer) -> _Header:
    """The whole object read through a _Tracked stream: Rejected where pydicom failed, or ran out
    of bytes before any pixel element (truncated, not DICOM); else its header.

    Only objects without pixels, or broken ones, come here: pydicom reads what it can of a
    cut-off object without complaint.
    """
    stream = _Tracked(data)
    try:
        header = _read_header(stream)
    except MemoryError:
        raise
    except Exception as exc:  # pydicom raises many types on garbage
        if _ran_out(stream, None):
            _truncated()
        if isinstance(exc, (InvalidDicomError, EOFError)):
            _reject(ReasonCode.NOT_DICOM, f"The file is not a readable DICOM object ({exc}).")
        _reject(ReasonCode.NOT_DICOM, f"The DICOM header could not be read ({type(exc).__name__}: {exc}).")
    deflated = header.syntax == _uid.DeflatedExplicitVRLittleEndian
    if header.pixels is None and not deflated and _ran_out(stream, header):
        _truncated()
    return header


def _truncated() -> NoReturn:
    _reject(ReasonCode.TRUNCATED, "The DICOM file ends inside its header; the upload may have been cut off.")


def _read_buffer(data: Buffer) -> _Header:
    """_read_header over the object's bytes. Raises whatever pydicom raises.

    Bytes are shared with the stream; another buffer (an mmap'd file, say) would be copied whole,
    so its first 64 KiB are tried first: the header is nearly always in them.
    """
    if isinstance(data, bytes) or len(data) <= HEADER_RANGE_BYTES:
        return _read_header(io.BytesIO(data))
    try:
        header = _read_header(io.BytesIO(memoryview(data)[:HEADER_RANGE_BYTES]))
        if header.pixels is not None:
            return header
    except MemoryError:
        raise
    except Exception:  # the header runs past the first bytes: read them all
        pass
    return _read_header(io.BytesIO(data))


def _instance(data: Buffer, ds: Dataset, syntax: str, pixels: PixelLocation | None) -> ParsedInstance:
    """The ParsedInstance from the raw values of pydicom's header."""
    little = ds.original_encoding[1] is not False
    elements = {int(tag): elem for tag, elem in ds.items()}  # as pydicom read them, unconverted

    def get(tag: int) -> bytes | None:
        return _raw(elements.get(tag), ds)

    def text_of(tag: int) -> str:
        raw = get(tag)
        return text(raw) if raw else ""

    def ushort_of(tag: int, default: int) -> int:
        raw = get(tag)
        value = ushort(raw, little) if raw else None
        return default if value is None else value

    def integer_of(tag: int) -> int | None:
        raw = get(tag)
        return integer(raw) if raw else None

    position = vector(get(POSITION), 3)
    orientation = vector(get(ORIENTATION), 6)
    spacing = vector(get(PIXEL_SPACING), 2)
    slope, intercept = read_rescale(get(RESCALE_SLOPE), get(RESCALE_INTERCEPT))  # Rejected if unusable
    burned = text_of(BURNED_IN).upper()
    frames = integer_of(NUMBER_OF_FRAMES)
    offsets_raw = get(GRID_FRAME_OFFSETS)
    offsets = numbers(offsets_raw) if offsets_raw else None
    bits_allocated = ushort_of(BITS_ALLOCATED, 0)
    summary = InstanceSummary(
        sop_instance_uid=text_of(SOP_INSTANCE),
        sop_class_uid=text_of(SOP_CLASS),
        series_instance_uid=text_of(SERIES_UID),
        study_instance_uid=text_of(STUDY_UID),
        frame_of_reference_uid=text_of(FRAME_OF_REFERENCE) or None,
        modality=text_of(MODALITY),
        transfer_syntax=syntax,
        rows=ushort_of(ROWS, 0),
        columns=ushort_of(COLUMNS, 0),
        frames=frames if frames is not None and frames > 0 else 1,
        samples_per_pixel=ushort_of(SAMPLES_PER_PIXEL, 1),
        photometric_interpretation=text_of(PHOTOMETRIC).upper(),
        bits_allocated=bits_allocated,
        bits_stored=ushort_of(BITS_STORED, bits_allocated),
        pixel_representation=ushort_of(PIXEL_REPRESENTATION, 0),
        image_position=(position[0], position[1], position[2]) if position else None,
        image_orientation=(
            (orientation[0], orientation[1], orientation[2], orientation[3], orientation[4], orientation[5])
            if orientation
            else None
        ),
        pixel_spacing=(spacing[0], spacing[1]) if spacing else None,
        slice_thickness=first_number(get(SLICE_THICKNESS)),
        rescale_slope=slope,
        rescale_intercept=intercept,
        instance_number=integer_of(INSTANCE_NUMBER),
        burned_in_annotation=None if not burned else burned == "YES",
        enhanced=get(PER_FRAME_GROUPS) is not None,
        images_in_acquisition=integer_of(IMAGES_IN_ACQUISITION),
    )
    image_type = text_of(IMAGE_TYPE)
    return ParsedInstance(
        data=data,
        summary=summary,
        pixels=pixels,
        little_endian=little,
        dataset=ds,
        grid_frame_offsets=tuple(offsets) if offsets else None,
        dose_grid_scaling=scale_factor(get(DOSE_GRID_SCALING), "Dose Grid Scaling (3004,000E)", nonzero=True),
        spacing_between_slices=first_number(get(SPACING_BETWEEN_SLICES)),
        image_type=tuple(part.strip().upper() for part in image_type.split("\\")) if image_type else (),
        has_modality_lut=get(MODALITY_LUT) is not None,
    )


_DEFLATED_UID: Final = _uid.DeflatedExplicitVRLittleEndian.encode()
# A deflated dataset may inflate past this, and past Limits' expansion ratio, only as a bomb: the
# rule a .zip entry follows (archive.py), since both carry the same deflate streams.
_INFLATE_FLOOR: Final = 1024 * 1024
_INFLATE_PIECE: Final = 1024 * 1024


def _deflated_start(data: Buffer) -> int | None:
    """Where the deflate stream of a Deflated Explicit VR Little Endian object starts (after its
    file meta information, which is never deflated); None for any other object."""
    head = bytes(memoryview(data)[:HEADER_RANGE_BYTES])
    if _DEFLATED_UID not in head:  # a cheap look before a parse: nearly every object is not deflated
        return None
    stream = io.BytesIO(head)
    try:
        if read_preamble(stream, force=True) is None:
            return None
        meta = read_dataset(
            stream, is_implicit_VR=False, is_little_endian=True, stop_when=lambda tag, vr, n: tag >> 16 != 2
        )
    except MemoryError:
        raise
    except Exception:  # no readable file meta: not an object pydicom would inflate either
        return None
    raw = raw_value(meta, TRANSFER_SYNTAX)
    return stream.tell() if raw is not None and text(raw) == _uid.DeflatedExplicitVRLittleEndian else None


def _check_inflated_size(data: Buffer, start: int) -> None:
    """Inflate a deflated dataset piece by piece, keeping nothing, and refuse it as a bomb once it
    passes the expansion limit (pydicom inflates it whole, in memory, with no limit)."""
    deflated = memoryview(data)[start:]
    limit = max(_INFLATE_FLOOR, int(len(deflated) * Limits().max_expansion_ratio))
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    inflated = 0
    pending: Buffer = deflated
    while pending and not inflater.eof:
        try:
            inflated += len(inflater.decompress(pending, _INFLATE_PIECE))
        except zlib.error:
            return  # a damaged stream: pydicom's own read reports it
        if inflated > limit:
            _reject(
                ReasonCode.DECOMPRESSION_BOMB,
                f"The deflated DICOM dataset expands beyond {limit} bytes from {len(deflated)} "
                "(a decompression bomb); it was not inflated further.",
            )
        pending = inflater.unconsumed_tail


def parse_instance(data: Buffer, *, object_size: int | None = None) -> ParsedInstance:
    """Parse a header (no policy applied: see check_policy). Raises Rejected or NeedMoreData.

    Rejects here only what makes the object unreadable: not_dicom, truncated, decompression_bomb
    (a deflated dataset), and bad_header for a top-level Rescale Slope/Intercept or Dose Grid
    Scaling that cannot be applied.
    """
    prefix = object_size is not None and object_size > len(data)
    if not looks_like_dicom(data):
        if prefix and len(data) < 132:
            raise NeedMoreData("too few bytes to tell")
        _reject(ReasonCode.NOT_DICOM, f"The file looks like {_describe(data)}, not a DICOM object.")
    deflated_start = _deflated_start(data)
    if deflated_start is not None:
        if prefix:
            raise NeedMoreData("deflated datasets are read whole")
        _check_inflated_size(data, deflated_start)
    try:
        header: _Header | None = _read_buffer(data)
    except MemoryError:
        raise
    except Exception as exc:  # pydicom raises many types on garbage, or on bytes that end early
        if prefix:
            raise NeedMoreData(str(exc)) from exc
        header = None
    deflated = header is not None and header.syntax == _uid.DeflatedExplicitVRLittleEndian
    if prefix and deflated:
        raise NeedMoreData("deflated datasets are read whole")
    if header is None or (header.pixels is None and not deflated):
        if prefix:
            raise NeedMoreData("no pixel data before the end of the bytes read")
        header = _read_whole(data)  # Rejected, or a header without pixel data
    if header.syntax == _uid.DeflatedExplicitVRLittleEndian:
        # The dataset is one deflate stream: pixel data has no offset in our bytes, so read it all
        # (pydicom decodes its pixels from the dataset).
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return _instance(data, pydicom.dcmread(io.BytesIO(data), force=True), header.syntax, None)
    parsed = _instance(data, header.ds, header.syntax, header.pixels)
    # The object's size is enough to tell a cut-off upload: no need for the bytes themselves.
    _check_pixel_length(parsed, object_size if prefix and object_size is not None else len(data))
    return parsed


def _check_pixel_length(parsed: ParsedInstance, size: int) -> None:
    """Native pixel data must hold every frame the header declares (truncated otherwise)."""
    loc, s = parsed.pixels, parsed.summary
    if loc is None or loc.tag != PIXEL_DATA or not s.rows or not s.columns or not s.bits_allocated:
        return
    available = size - loc.offset
    if loc.length is None or s.transfer_syntax not in _NATIVE_SYNTAXES:
        # Encapsulated (some writers give it a defined length): the frames are checked on decode.
        if available < 8:
            _reject(ReasonCode.TRUNCATED, "The compressed pixel data is cut off.")
        return
    samples = max(s.samples_per_pixel, 1)
    if s.photometric_interpretation == "YBR_FULL_422":
        samples = 2  # chroma subsampled 2:1 horizontally: two values a pixel on average
    bits = s.rows * s.columns * s.frames * samples * s.bits_allocated
    needed = (bits + 7) // 8
    if min(loc.length, available) < needed:
        _reject(
            ReasonCode.TRUNCATED,
            f"The pixel data holds {min(loc.length, available)} bytes; {s.frames} frame(s) of "
            f"{s.rows}x{s.columns} need {needed}. The upload may have been cut off.",
        )


def check_policy(parsed: ParsedInstance, burned_in: BurnedInPolicy = "reject") -> InstanceSummary:
    """The per-object rules: pixel data present, a decodable transfer syntax, burned-in text."""
    s = parsed.summary
    if not parsed.has_pixel_data:
        kind = {
            FLOAT_PIXEL_DATA: "float pixel data (a parametric map)",
            DOUBLE_PIXEL_DATA: "double float pixel data (a parametric map)",
        }.get(parsed.pixels.tag if parsed.pixels else 0, "no Pixel Data (7FE0,0010)")
        _reject(
            ReasonCode.NO_PIXEL_DATA,
            f"The DICOM object (modality {s.modality or 'unknown'}) has {kind}; an image is required.",
        )
    if s.transfer_syntax not in supported_transfer_syntaxes():
        name = _uid.UID(s.transfer_syntax).name if s.transfer_syntax else "none"
        _reject(
            ReasonCode.UNSUPPORTED_TRANSFER_SYNTAX,
            f"The pixel data is encoded as {name} ({s.transfer_syntax}), which we cannot decode; "
            "send it uncompressed, or as JPEG, JPEG-LS, JPEG 2000 or RLE.",
        )
    if s.burned_in_annotation and burned_in == "reject":
        _reject(
            ReasonCode.BURNED_IN_PHI,
            "The image is marked Burned In Annotation = YES: its pixels show identifying text, "
            "which de-identification cannot remove.",
        )
    if s.enhanced:
        frame_rescales(parsed)  # Rejected (bad_header) where a frame's rescale cannot be applied
    return s


# --- enhanced (multi-frame) objects ---------------------------------------------------------------

_PIXEL_VALUE_TRANSFORMATION: Final = "PixelValueTransformationSequence"


def first_item(group: Dataset | None, keyword: str) -> Dataset | None:
    """The first item of a sequence in `group` (None: no group, no sequence, or an empty one)."""
    if group is None or keyword not in group:
        return None
    seq = group[keyword].value
    return seq[0] if seq else None


def frame_rescales(parsed: ParsedInstance) -> list[tuple[float, float]]:
    """An enhanced object's (slope, intercept) per frame, one for each per-frame functional group
    (at most the frame count): the frame's Pixel Value Transformation, else the shared one, with
    the top level's values where it has none.  Rejected (bad_header) where one is unusable, the
    shared one included even when every frame has its own.
    """
    ds, s = parsed.dataset, parsed.summary
    default = (s.rescale_slope, s.rescale_intercept)

    def rescale_of(transform: Dataset | None, where: str) -> tuple[float, float]:
        if transform is None:
            return default
        slope, intercept = raw_value(transform, RESCALE_SLOPE), raw_value(transform, RESCALE_INTERCEPT)
        return read_rescale(slope, intercept, default=default, where=where)

    shared_groups = first_item(ds, "SharedFunctionalGroupsSequence")
    shared = rescale_of(first_item(shared_groups, _PIXEL_VALUE_TRANSFORMATION), "shared functional groups")
    per_frame = ds.get("PerFrameFunctionalGroupsSequence") or []
    rescales = []
    for k, item in enumerate(per_frame[: s.frames]):
        transform = first_item(item, _PIXEL_VALUE_TRANSFORMATION)
        rescales.append(shared if transform is None else rescale_of(transform, f"frame {k + 1}"))
    return rescales


def read_instance_header(
    data: Buffer, *, object_size: int | None = None, burned_in: BurnedInPolicy = "reject"
) -> InstanceSummary:
    """Validate one object's header (pixels located, never decoded) -> InstanceSummary or Rejected.

    `data` is the whole object, or its first bytes with `object_size` the whole size (a range read):
    then NeedMoreData means the header runs past them.  Anything else escaping is a bug
    (MemoryError aside).
    """
    try:
        return check_policy(parse_instance(data, object_size=object_size), burned_in)
    except (Rejected, NeedMoreData, MemoryError):
        raise
    except Exception as exc:  # a backstop: arbitrary bytes must not crash ingest
        raise Rejected(ReasonCode.NOT_DICOM, f"The DICOM header could not be read ({exc}).") from exc
