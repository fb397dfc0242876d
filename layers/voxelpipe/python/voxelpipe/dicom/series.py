"""A DICOM series -> one 3-D volume: a NIfTI image (RAS+ affine) and a report.

``assemble_series(instances)`` takes the objects of one upload (bytes each) and:

1. parses each header once (sniff.parse_instance: header only, pixels located, not decoded);
   objects without image pixels (SR, presentation states, a DICOMDIR...) are skipped and
   counted; a repeated SOP Instance UID is kept once (``duplicates_dropped``);
2. requires one series of one study (``mixed_series``), grayscale images (``unsupported_dimensions``
   for colour), and one geometry: the same orientation, size and pixel spacing everywhere and a
   position for every frame (``inconsistent_geometry``);
3. sorts the frames along the slice normal (row x column direction cosines) and checks the
   spacing: positions repeated the same number of times are several volumes (echoes, phases,
   time points: ``unsupported_dimensions``, one volume per upload, as for NIfTI); otherwise
   repeated, uneven (beyond 10 % of the median step) or sheared-off-line positions are
   ``inconsistent_geometry``; a step that is a whole multiple of the median is missing slices
   (``incomplete_series``);
4. allocates the output once and decodes every frame straight into its place (native data is
   copied from the upload's bytes; compressed frames go through pydicom's decoders with the
   pylibjpeg plugin named, in threads where the codec releases the GIL); rescale slope/intercept
   are applied on the way: the stored integer type is kept when they are the identity, an integer
   type (int16, else int32) when they are integral and the stored bit depth fits, else float32;
   an unusable slope/intercept was already rejected with the header (``bad_header``, see
   sniff), and values the rescale takes beyond float32 are ``non_finite_data``;
5. builds the affine: DICOM patient coordinates are LPS, NIfTI's are RAS, so x and y change
   sign; voxel axis i runs along a row (Image Orientation's first cosine, scaled by the column
   spacing, Pixel Spacing[1]), j down the columns (second cosine, Pixel Spacing[0]), k from the
   first to the last slice (the mean step, so a CT gantry tilt becomes a shear in the affine).

Single objects: a multi-frame object (enhanced MR/CT/PET with per-frame functional groups, or
RT Dose with Grid Frame Offset Vector) is a series by itself; one 2-D image is not a volume
(``unsupported_dimensions``), unless its header says the acquisition had more images, in which
case the rest are missing (``incomplete_series``).

The volume comes out in RAS+ voxel order (``canonical=True``, what Prepare writes) or in the
acquisition's order.  Its voxels live in one buffer laid out as a NIfTI-1 file (352-byte header,
then data), so ``SeriesVolume.nifti_bytes()`` is the .nii without another copy.

Not done here: unused high bits (Bits Stored < Bits Allocated) are taken as written, as pydicom
and dcm2niix do; MONOCHROME1 is not inverted (reported); a Modality LUT Sequence is not applied
(reported).

Measured on a 2-core box (512x512 16-bit frames, this pydicom and these plugins): openjpeg holds
the GIL (2 threads: 0.85x), libjpeg and pylibjpeg-rle release it in part (1.3x, 1.4x); native
data is memory-bound.  So only JPEG/JPEG-LS and RLE frames are decoded in threads.
"""

from __future__ import annotations

import io
import math
import os
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Final, NoReturn

import nibabel as nib
import numpy as np
import numpy.typing as npt
from isal import igzip
from nibabel import orientations
from pydicom import uid as _uid
from pydicom.dataset import Dataset

from voxelpipe.dicom.sniff import (
    PIXEL_DATA,
    Buffer,
    BurnedInPolicy,
    InstanceSummary,
    ParsedInstance,
    check_policy,
    first_item,
    frame_rescales,
    parse_instance,
    raw_value,
)
from voxelpipe.dicom.values import FLOAT32_MAX, first_number, vector
from voxelpipe.limits import Limits
from voxelpipe.rejections import ReasonCode, Rejected

__all__ = ["NIFTI_DATA_OFFSET", "SeriesReport", "SeriesVolume", "assemble_series", "check_series"]

# Single-file NIfTI-1 without extensions: 348-byte header + 4-byte extension flag.
NIFTI_DATA_OFFSET: Final = 352
# Orientation cosines that differ by more than this are different orientations.
_ORIENTATION_TOLERANCE: Final = 1e-3
# A slice step may differ from the median step by this fraction before the spacing is uneven.
_SPACING_TOLERANCE: Final = 0.10
# ...and by this fraction before the report mentions it.
_SPACING_WARNING: Final = 0.01
_PIXEL_SPACING_TOLERANCE: Final = 1e-3  # relative
_MIN_PARALLEL_FRAMES: Final = 8
_PARALLEL_SYNTAXES: Final = frozenset(
    {
        _uid.JPEGBaseline8Bit,
        _uid.JPEGExtended12Bit,
        _uid.JPEGLossless,
        _uid.JPEGLosslessSV1,
        _uid.JPEGLSLossless,
        _uid.JPEGLSNearLossless,
        _uid.RLELossless,
    }
)
_NATIVE_LITTLE: Final = frozenset({_uid.ImplicitVRLittleEndian, _uid.ExplicitVRLittleEndian})
_NATIVE: Final = _NATIVE_LITTLE | {_uid.ExplicitVRBigEndian, _uid.DeflatedExplicitVRLittleEndian}
_LPS_TO_RAS: Final = np.diag([-1.0, -1.0, 1.0, 1.0])


@dataclass(frozen=True)
class SeriesReport:
    """What assembly found and did; no identifying values (no UIDs, names, dates)."""

    n_objects: int  # objects given
    n_instances: int  # image objects used (after duplicates and non-images)
    n_slices: int
    shape: tuple[int, int, int]
    voxel_size_mm: tuple[float, float, float]
    slice_spacing_mm: float  # mean distance between slice centres along the normal
    slice_thickness_mm: float | None
    orientation: tuple[str, str, str]  # axis codes of the output volume
    acquisition_orientation: tuple[str, str, str]  # axis codes in the acquired (row, column, slice) order
    modality: str
    transfer_syntaxes: tuple[str, ...]  # names
    multi_frame: bool
    dtype: str
    rescaled: bool  # slope/intercept other than 1/0 were applied
    duplicates_dropped: int  # repeated SOP Instance UIDs
    ignored_objects: int  # objects without image pixels
    gantry_tilt_deg: float  # angle between the slice normal and the slice-to-slice step
    burned_in_annotation: bool  # flagged under the "flag" policy
    decode_workers: int
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True, eq=False)
class SeriesVolume:
    """The assembled volume: ``image`` (voxels already rescaled) and ``report``."""

    image: nib.Nifti1Image
    report: SeriesReport
    _file: npt.NDArray[np.uint8] = field(repr=False)  # NIfTI file image; the voxels are a view of it

    def nifti_bytes(self, compress: bool = False, level: int = 1) -> bytes | memoryview:
        """The volume as a single-file NIfTI-1: ``.nii`` (a zero-copy view) or ``.nii.gz`` (ISA-L).

        The same bytes as ``voxelpipe.nifti.to_nifti_bytes(self.image, compress)`` (a test checks
        it), without copying the voxels: the header is written in front of them.
        """
        header = self.image.header.copy()  # type: ignore[no-untyped-call]
        header.set_data_offset(NIFTI_DATA_OFFSET)
        header.set_slope_inter(1.0, 0.0)  # as nibabel writes unscaled data
        block: bytes = header.binaryblock
        self._file[: len(block)] = np.frombuffer(block, np.uint8)
        self._file[len(block) : NIFTI_DATA_OFFSET] = 0  # no extensions
        view = self._file.data  # a memoryview of the whole file image
        return igzip.compress(view, level) if compress else view


@dataclass(frozen=True)
class _Frame:
    instance: int  # index into the image objects
    index: int  # frame number within the object
    position: tuple[float, float, float] | None
    orientation: tuple[float, float, float, float, float, float] | None
    spacing: tuple[float, float] | None
    thickness: float | None
    slope: float
    intercept: float


def _reject(reason: ReasonCode, detail: str) -> NoReturn:
    raise Rejected(reason, detail)


def assemble_series(
    instances: Sequence[Buffer],
    *,
    limits: Limits | None = None,
    burned_in: BurnedInPolicy = "reject",
    canonical: bool = True,
    workers: int | None = None,
) -> SeriesVolume:
    """The objects of one series (bytes each, any order) -> SeriesVolume, or Rejected.

    Any bytes-like object will do (a memoryview of an mmap'd file, say); they are only read.

    `workers`: decode threads for codecs that release the GIL (default: the CPU count, at most 8).
    Anything but Rejected escaping is a bug (MemoryError aside).
    """
    try:
        return _assemble(instances, limits or Limits(), burned_in, canonical, workers)
    except (Rejected, MemoryError, KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:  # a backstop (incl. pyo3 panics): uploads must not crash Prepare
        raise Rejected(
            ReasonCode.NOT_DICOM, f"Unexpected error reading the DICOM series ({type(exc).__name__}: {exc})."
        ) from exc


def _parse_all(
    instances: Sequence[Buffer], burned_in: BurnedInPolicy
) -> tuple[list[ParsedInstance], int, int]:
    """Image objects (first of each SOP Instance UID), duplicates dropped, non-images skipped."""
    images: list[ParsedInstance] = []
    seen: set[str] = set()
    duplicates = ignored = 0
    for number, data in enumerate(instances, 1):
        try:
            parsed = parse_instance(data)
            if not parsed.has_pixel_data:
                ignored += 1
                continue
            uid = parsed.summary.sop_instance_uid
            if uid and uid in seen:
                duplicates += 1
                continue
            check_policy(parsed, burned_in)
        except Rejected as exc:
            if len(instances) == 1:
                raise
            raise Rejected(exc.reason, f"Object {number} of {len(instances)}: {exc.detail}") from None
        seen.add(uid)
        images.append(parsed)
    return images, duplicates, ignored


def _assemble(
    instances: Sequence[Buffer],
    limits: Limits,
    burned_in: BurnedInPolicy,
    canonical: bool,
    workers: int | None,
) -> SeriesVolume:
    if not instances:
        _reject(ReasonCode.INCOMPLETE_SERIES, "The series has no objects.")
    images, duplicates, ignored = _parse_all(instances, burned_in)
    if not images:
        _reject(
            ReasonCode.NO_PIXEL_DATA,
            f"None of the {len(instances)} DICOM object(s) holds image pixel data.",
        )
    summaries = [p.summary for p in images]
    _check_one_series(summaries)
    _check_pixel_types(summaries)
    frames = [frame for i, parsed in enumerate(images) for frame in _frames_of(parsed, i)]
    geometry = _series_geometry(summaries, frames, limits)
    first = summaries[0]
    rows, cols, n = first.rows, first.columns, len(geometry.order)
    dtype, rescaled = _output_dtype(images, frames)

    native_affine = _LPS_TO_RAS @ geometry.lps_affine
    ornt = (
        orientations.io_orientation(native_affine)  # type: ignore[no-untyped-call]
        if canonical
        else np.array([[0, 1], [1, 1], [2, 1]], dtype=float)
    )
    shape_native = (cols, rows, n)
    out_axes = [int(ornt[a, 0]) for a in range(3)]
    flips = [int(ornt[a, 1]) for a in range(3)]
    shape_out = [0, 0, 0]
    for a in range(3):
        shape_out[out_axes[a]] = shape_native[a]
    # Output voxel p -> native voxel: along output axis w = out_axes[a], native x_a = p_w or
    # (size - 1 - p_w) when flipped.  The affine composes with that map (nibabel's inv_ornt_aff).
    to_native = np.zeros((4, 4))
    to_native[3, 3] = 1.0
    for a in range(3):
        to_native[a, out_axes[a]] = flips[a]
        to_native[a, 3] = 0.0 if flips[a] > 0 else shape_native[a] - 1
    affine = native_affine @ to_native

    itemsize = np.dtype(dtype).itemsize
    nbytes = rows * cols * n * itemsize
    file_image = np.empty(NIFTI_DATA_OFFSET + nbytes, dtype=np.uint8)  # the one allocation
    volume: npt.NDArray[Any] = (
        file_image[NIFTI_DATA_OFFSET:].view(dtype).reshape(shape_out[::-1]).T
    )  # F-ordered (x, y, z), x fastest, as NIfTI stores it
    native_view = volume.transpose(out_axes)  # index by native (i, j, k)
    native_view = native_view[tuple(slice(None, None, -1) if flips[a] < 0 else slice(None) for a in range(3))]
    # Frame k, DICOM row r, column c -> native (i=c, j=r, k).
    targets = native_view.transpose(2, 1, 0)

    used_workers = _decode(images, [frames[i] for i in geometry.order], targets, dtype, workers)

    img = nib.Nifti1Image(volume, affine)  # type: ignore[no-untyped-call]
    img.header.set_xyzt_units("mm", "sec")  # type: ignore[no-untyped-call]
    # The header stores float32; the image keeps the float64 affine it was computed as.
    img.set_qform(affine, code=1, update_affine=False)  # type: ignore[no-untyped-call]
    img.set_sform(affine, code=1, update_affine=False)  # type: ignore[no-untyped-call]

    warnings = list(geometry.warnings)
    if any(p.summary.photometric_interpretation == "MONOCHROME1" for p in images):
        warnings.append("MONOCHROME1: low values display bright; the values are kept as stored")
    if any(p.has_modality_lut for p in images):
        warnings.append("a Modality LUT Sequence is present and was not applied")
    flagged = any(p.summary.burned_in_annotation for p in images)
    if flagged:
        warnings.append("Burned In Annotation = YES: the pixels may show identifying text")
    if any("LOCALIZER" in p.image_type for p in images):
        warnings.append("the images are marked LOCALIZER")
    zooms = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    report = SeriesReport(
        n_objects=len(instances),
        n_instances=len(images),
        n_slices=n,
        shape=(int(volume.shape[0]), int(volume.shape[1]), int(volume.shape[2])),
        voxel_size_mm=(float(zooms[0]), float(zooms[1]), float(zooms[2])),
        slice_spacing_mm=geometry.spacing,
        slice_thickness_mm=frames[0].thickness,
        orientation=_axcodes(affine),
        acquisition_orientation=_axcodes(native_affine),
        modality=first.modality,
        transfer_syntaxes=tuple(sorted({_uid.UID(p.summary.transfer_syntax).name for p in images})),
        multi_frame=any(p.summary.frames > 1 for p in images),
        dtype=np.dtype(dtype).name,
        rescaled=rescaled,
        duplicates_dropped=duplicates,
        ignored_objects=ignored,
        gantry_tilt_deg=geometry.tilt_deg,
        burned_in_annotation=flagged,
        decode_workers=used_workers,
        warnings=tuple(warnings),
    )
    return SeriesVolume(image=img, report=report, _file=file_image)


def _axcodes(affine: npt.NDArray[np.float64]) -> tuple[str, str, str]:
    codes = orientations.aff2axcodes(affine)  # type: ignore[no-untyped-call]
    return (str(codes[0]), str(codes[1]), str(codes[2]))


# --- checks ---------------------------------------------------------------------------------------


def check_series(summaries: Sequence[InstanceSummary], *, limits: Limits | None = None) -> None:
    """The series-level checks, from the per-object summaries ingest recorded: no bytes needed.

    For the moment an upload completes (every manifest file arrived, or POST .../complete), while
    the study can still be REJECTED: one series (mixed_series), grayscale (unsupported_dimensions),
    more than one image, one orientation/size/spacing, no missing or repeated slices
    (inconsistent_geometry, incomplete_series), within `limits`.  A repeated SOP Instance UID
    counts once.  Multi-frame objects keep their geometry per frame, which summaries do not
    hold: for those, assemble_series checks it.  Raises Rejected; returns None when it passes.
    """
    try:
        unique = list({s.sop_instance_uid or str(i): s for i, s in enumerate(summaries)}.values())
        if not unique:
            _reject(ReasonCode.INCOMPLETE_SERIES, "The series has no image objects.")
        _check_one_series(unique)
        _check_pixel_types(unique)
        if any(s.frames > 1 or s.enhanced for s in unique):
            if len(unique) > 1:
                _check_sizes(unique)
            return
        frames = [
            _Frame(i, 0, s.image_position, s.image_orientation, s.pixel_spacing, s.slice_thickness, 1.0, 0.0)
            for i, s in enumerate(unique)
        ]
        _series_geometry(unique, frames, limits or Limits())
    except (Rejected, MemoryError):
        raise
    except Exception as exc:  # a backstop, as in assemble_series
        raise Rejected(
            ReasonCode.NOT_DICOM, f"Unexpected error checking the DICOM series ({type(exc).__name__}: {exc})."
        ) from exc


def _series_geometry(summaries: list[InstanceSummary], frames: list[_Frame], limits: Limits) -> _Geometry:
    """One 2-D image is not a volume; otherwise the stack's geometry, checked, within limits."""
    first = summaries[0]
    if len(frames) < 2:
        expected = first.images_in_acquisition
        if expected is not None and expected > 1:
            _reject(
                ReasonCode.INCOMPLETE_SERIES,
                f"Only 1 image arrived; its header says the acquisition has {expected}.",
            )
        _reject(
            ReasonCode.UNSUPPORTED_DIMENSIONS,
            f"The upload is a single 2-D image ({first.rows}x{first.columns}, modality "
            f"{first.modality or 'unknown'}); a 3-D volume (a series of slices) is required.",
        )
    geometry = _geometry(frames, summaries)
    _check_limits(first.rows, first.columns, len(geometry.order), limits)
    return geometry


def _check_one_series(summaries: list[InstanceSummary]) -> None:
    series = Counter(s.series_instance_uid for s in summaries)
    if len(series) > 1:
        counts = ", ".join(str(c) for c in sorted(series.values(), reverse=True))
        _reject(
            ReasonCode.MIXED_SERIES,
            f"The upload holds {len(series)} series ({counts} images); upload one series at a time.",
        )
    studies = {s.study_instance_uid for s in summaries}
    if len(studies) > 1:
        _reject(ReasonCode.MIXED_SERIES, f"The images belong to {len(studies)} different studies.")


def _check_pixel_types(summaries: list[InstanceSummary]) -> None:
    for s in summaries:
        # A missing Photometric Interpretation with one sample is taken as MONOCHROME2 (as dcm2niix does).
        grayscale = s.photometric_interpretation in ("MONOCHROME1", "MONOCHROME2", "")
        if s.samples_per_pixel != 1 or not grayscale:
            _reject(
                ReasonCode.UNSUPPORTED_DIMENSIONS,
                f"The images are colour ({s.photometric_interpretation or 'unknown'}, "
                f"{s.samples_per_pixel} samples per pixel); a grayscale volume is required.",
            )
        if s.bits_allocated not in (1, 8, 16, 32):
            _reject(
                ReasonCode.UNSUPPORTED_DIMENSIONS,
                f"Bits Allocated is {s.bits_allocated}; 8-, 16- or 32-bit (or 1-bit) pixels are required.",
            )
        if s.rows < 2 or s.columns < 2:
            _reject(
                ReasonCode.UNSUPPORTED_DIMENSIONS,
                f"The images are {s.rows}x{s.columns}; at least 2x2 pixels are required.",
            )


def _check_limits(rows: int, cols: int, n: int, limits: Limits) -> None:
    if max(rows, cols, n) > limits.max_dim:
        _reject(
            ReasonCode.UNSUPPORTED_DIMENSIONS,
            f"The volume {cols}x{rows}x{n} has an axis longer than {limits.max_dim} voxels.",
        )
    if rows * cols * n > limits.max_voxels:
        _reject(
            ReasonCode.TOO_LARGE,
            f"The volume has {rows * cols * n} voxels; the limit is {limits.max_voxels}.",
        )


# --- frames and geometry --------------------------------------------------------------------------


def _frames_of(p: ParsedInstance, i: int) -> list[_Frame]:
    s = p.summary
    if s.enhanced:
        return _enhanced_frames(p, i)
    slope = s.rescale_slope * (p.dose_grid_scaling or 1.0)
    if s.frames > 1 and p.grid_frame_offsets is not None and s.image_position and s.image_orientation:
        # RT Dose style: frames along the normal at the given offsets (PS3.3 C.8.8.3.2); a
        # first offset of 0 means relative offsets, otherwise they are absolute (axial) z values.
        offsets = p.grid_frame_offsets
        if len(offsets) != s.frames:
            _reject(
                ReasonCode.INCONSISTENT_GEOMETRY,
                f"Grid Frame Offset Vector has {len(offsets)} values for {s.frames} frames.",
            )
        row, col = np.array(s.image_orientation[:3]), np.array(s.image_orientation[3:])
        normal = np.cross(row, col)
        origin = np.array(s.image_position)
        frames = []
        for k, offset in enumerate(offsets):
            pos = origin + (offset - offsets[0]) * normal
            frames.append(
                _Frame(
                    i,
                    k,
                    (float(pos[0]), float(pos[1]), float(pos[2])),
                    s.image_orientation,
                    s.pixel_spacing,
                    s.slice_thickness,
                    slope,
                    s.rescale_intercept,
                )
            )
        return frames
    # A classic object: one position for all its frames (so a multi-frame one has none per frame).
    position = s.image_position if s.frames == 1 else None
    geometry = (s.image_orientation, s.pixel_spacing, s.slice_thickness)
    return [_Frame(i, k, position, *geometry, slope, s.rescale_intercept) for k in range(s.frames)]


def _enhanced_frames(p: ParsedInstance, i: int) -> list[_Frame]:
    """Per-frame geometry and scaling from the functional groups (per-frame first, then shared)."""
    ds = p.dataset
    s = p.summary
    shared = first_item(ds, "SharedFunctionalGroupsSequence")
    per_frame = ds.get("PerFrameFunctionalGroupsSequence") or []
    if len(per_frame) < s.frames:
        _reject(
            ReasonCode.INCONSISTENT_GEOMETRY,
            f"The multi-frame object has {s.frames} frames but {len(per_frame)} per-frame functional groups.",
        )
    rescales = frame_rescales(p)
    frames = []
    for k in range(s.frames):
        item = per_frame[k]

        def macro(keyword: str, item: Dataset = item) -> Dataset | None:
            found = first_item(item, keyword)
            return found if found is not None else first_item(shared, keyword)

        plane_position = macro("PlanePositionSequence")
        plane_orientation = macro("PlaneOrientationSequence")
        measures = macro("PixelMeasuresSequence")
        position = vector(raw_value(plane_position, 0x00200032), 3) if plane_position else None
        orientation = vector(raw_value(plane_orientation, 0x00200037), 6) if plane_orientation else None
        spacing = vector(raw_value(measures, 0x00280030), 2) if measures else None
        thickness = first_number(raw_value(measures, 0x00180050)) if measures else None
        slope, intercept = rescales[k]
        frames.append(
            _Frame(
                i,
                k,
                (position[0], position[1], position[2]) if position else None,
                _six(orientation) if orientation else s.image_orientation,
                (spacing[0], spacing[1]) if spacing else s.pixel_spacing,
                thickness if thickness is not None else s.slice_thickness,
                slope,
                intercept,
            )
        )
    return frames


def _six(v: tuple[float, ...]) -> tuple[float, float, float, float, float, float]:
    return (v[0], v[1], v[2], v[3], v[4], v[5])


@dataclass(frozen=True)
class _Geometry:
    order: list[int]  # frame indices, sorted along the normal
    lps_affine: npt.NDArray[np.float64]
    spacing: float
    tilt_deg: float
    warnings: tuple[str, ...]


def _check_sizes(summaries: list[InstanceSummary]) -> None:
    first = summaries[0]
    if any(s.rows != first.rows or s.columns != first.columns for s in summaries):
        sizes = sorted({f"{s.rows}x{s.columns}" for s in summaries})
        _reject(ReasonCode.INCONSISTENT_GEOMETRY, f"The images have different sizes ({', '.join(sizes)}).")


def _geometry(frames: list[_Frame], summaries: list[InstanceSummary]) -> _Geometry:
    _check_sizes(summaries)
    missing = sum(1 for f in frames if f.position is None or f.orientation is None)
    if missing:
        _reject(
            ReasonCode.INCONSISTENT_GEOMETRY,
            f"Of {len(frames)} images, {missing} have no Image Position/Orientation (Patient), so "
            "they cannot be placed in a volume.",
        )
    if any(f.spacing is None for f in frames):
        _reject(ReasonCode.INCONSISTENT_GEOMETRY, "The images have no Pixel Spacing (0028,0030).")
    orients = np.array([f.orientation for f in frames], dtype=np.float64)
    if np.abs(orients - orients[0]).max() > _ORIENTATION_TOLERANCE:
        distinct = len({tuple(np.round(o, 3)) for o in orients})
        _reject(
            ReasonCode.INCONSISTENT_GEOMETRY,
            f"The images have {distinct} different orientations (e.g. a three-plane localizer); "
            "a volume needs parallel slices.",
        )
    spacings = np.array([f.spacing for f in frames], dtype=np.float64)
    if (spacings <= 0).any() or np.abs(spacings / spacings[0] - 1).max() > _PIXEL_SPACING_TOLERANCE:
        _reject(ReasonCode.INCONSISTENT_GEOMETRY, "Pixel Spacing differs between images or is not positive.")
    row, col = orients[0, :3], orients[0, 3:]
    row_norm, col_norm = float(np.linalg.norm(row)), float(np.linalg.norm(col))
    if abs(row_norm - 1) > 0.01 or abs(col_norm - 1) > 0.01 or abs(float(row @ col)) > 0.01:
        _reject(
            ReasonCode.INCONSISTENT_GEOMETRY,
            "Image Orientation (Patient) is not two orthogonal unit vectors.",
        )
    row, col = row / row_norm, col / col_norm
    normal = np.cross(row, col)
    positions = np.array([f.position for f in frames], dtype=np.float64)
    depth = positions @ normal
    order = sorted(range(len(frames)), key=lambda k: (depth[k], frames[k].instance, frames[k].index))
    depth_sorted = depth[order]
    steps = np.diff(depth_sorted)
    extent = float(depth_sorted[-1] - depth_sorted[0])
    # Positions closer than this are the same position (1/1000 of the mean step).
    same = max(extent / max(len(frames) - 1, 1) * 1e-3, 1e-4)
    unique = int(np.count_nonzero(steps > same)) + 1
    if unique < len(frames):
        _repeated_positions(depth_sorted, same, unique, len(frames))
    median = float(np.median(steps))
    deviation = np.abs(steps - median) / median
    if (deviation > _SPACING_TOLERANCE).any():
        _uneven_steps(steps, median)
    warnings: list[str] = []
    if deviation.max() > _SPACING_WARNING:
        warnings.append(f"slice steps vary by up to {deviation.max() * 100:.1f}% of {median:.3f} mm")
    first_pos, last_pos = positions[order[0]], positions[order[-1]]
    n = len(frames)
    step = (last_pos - first_pos) / (n - 1)
    # Every slice on the line from the first to the last (within a tenth of a voxel).
    fractions = (depth_sorted - depth_sorted[0]) / extent
    off_line = positions[order] - (first_pos + np.outer(fractions, last_pos - first_pos))
    tolerance = 0.1 * min(float(spacings[0].min()), median) + 1e-3
    if np.linalg.norm(off_line, axis=1).max() > tolerance:
        _reject(
            ReasonCode.INCONSISTENT_GEOMETRY,
            "The slice positions do not lie on one line (the slices are shifted in-plane).",
        )
    tilt = math.degrees(math.acos(min(1.0, abs(float(step @ normal)) / float(np.linalg.norm(step)))))
    if tilt > 0.01:
        warnings.append(f"the slice stack is sheared by {tilt:.2f} degrees (gantry tilt), kept in the affine")
    pixel_spacing = spacings[0]
    lps = np.eye(4)
    lps[:3, 0] = row * pixel_spacing[1]  # along a row: the spacing between columns
    lps[:3, 1] = col * pixel_spacing[0]  # down a column: the spacing between rows
    lps[:3, 2] = step
    lps[:3, 3] = first_pos
    return _Geometry(order, lps, abs(float(step @ normal)), tilt, tuple(warnings))


def _repeated_positions(depth_sorted: npt.NDArray[np.float64], same: float, unique: int, n: int) -> NoReturn:
    groups = np.split(depth_sorted, np.nonzero(np.diff(depth_sorted) > same)[0] + 1)
    counts = {len(g) for g in groups}
    if unique == 1:
        _reject(
            ReasonCode.UNSUPPORTED_DIMENSIONS,
            f"All {n} images lie at one position (a 2-D time series or repeats); a 3-D volume is required.",
        )
    if len(counts) == 1:
        _reject(
            ReasonCode.UNSUPPORTED_DIMENSIONS,
            f"The series holds {counts.pop()} images at each of {unique} positions (several volumes: "
            "echoes, phases or time points); upload one volume at a time.",
        )
    _reject(
        ReasonCode.INCONSISTENT_GEOMETRY,
        f"Images repeat the positions of others ({n} images at {unique} positions).",
    )


def _uneven_steps(steps: npt.NDArray[np.float64], median: float) -> NoReturn:
    multiples = steps / median
    whole = np.round(multiples)
    gaps = (whole >= 2) & (np.abs(multiples - whole) <= _SPACING_TOLERANCE)
    irregular = (np.abs(multiples - 1) > _SPACING_TOLERANCE) & ~gaps
    if gaps.any() and not irregular.any():
        missing = int((whole[gaps] - 1).sum())
        _reject(
            ReasonCode.INCOMPLETE_SERIES,
            f"Slices are missing: the stack has {int(gaps.sum())} gap(s) in its {median:.3f} mm "
            f"spacing, {missing} slice(s) in all.",
        )
    _reject(
        ReasonCode.INCONSISTENT_GEOMETRY,
        f"The slice spacing is uneven: steps from {steps.min():.3f} to {steps.max():.3f} mm "
        f"around {median:.3f} mm.",
    )


# --- pixels ---------------------------------------------------------------------------------------


def _stored_dtype(p: ParsedInstance) -> np.dtype[Any]:
    s = p.summary
    if s.bits_allocated == 1:
        return np.dtype(np.uint8)
    kind = "i" if s.pixel_representation == 1 else "u"
    return np.dtype(f"{kind}{s.bits_allocated // 8}")


def _stored_range(p: ParsedInstance) -> tuple[int, int]:
    s = p.summary
    bits = max(1, min(s.bits_stored or s.bits_allocated, s.bits_allocated))
    if s.pixel_representation == 1:
        return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    return 0, 2**bits - 1


def _output_dtype(images: list[ParsedInstance], frames: list[_Frame]) -> tuple[np.dtype[Any], bool]:
    stored = np.result_type(*{_stored_dtype(p) for p in images})
    if all(f.slope == 1.0 and f.intercept == 0.0 for f in frames):
        return np.dtype(stored), False
    if all(f.slope == int(f.slope) and f.intercept == int(f.intercept) for f in frames):
        lo = hi = 0.0
        for f in frames:
            a, b = _stored_range(images[f.instance])
            ends = (a * f.slope + f.intercept, b * f.slope + f.intercept)
            lo, hi = min(lo, *ends), max(hi, *ends)
        for candidate in (np.int16, np.int32):
            info = np.iinfo(candidate)
            if info.min <= lo and hi <= info.max:
                return np.dtype(candidate), True
    return np.dtype(np.float32), True


_Decoder = Callable[[int], npt.NDArray[Any]]


def _frame_decoder(p: ParsedInstance) -> _Decoder:
    """frame index -> that frame's stored values, (rows, columns)."""
    s, loc = p.summary, p.pixels
    rows, cols = s.rows, s.columns
    syntax = s.transfer_syntax
    if (
        syntax in _NATIVE_LITTLE
        and loc is not None
        and loc.tag == PIXEL_DATA
        and loc.length is not None
        and s.bits_allocated in (8, 16, 32)
    ):
        dtype = _stored_dtype(p).newbyteorder("<")
        frame_bytes = rows * cols * dtype.itemsize
        data = p.data

        def native(k: int) -> npt.NDArray[Any]:
            # A view of the upload's bytes: the copy happens once, into the volume.
            return np.frombuffer(data, dtype, rows * cols, loc.offset + k * frame_bytes).reshape(rows, cols)

        return native
    if syntax not in _NATIVE and loc is not None:
        from pydicom.pixels.decoders.base import get_decoder

        decoder = get_decoder(syntax)
        end = len(p.data) if loc.length is None else loc.offset + loc.length
        value = bytes(p.data[loc.offset : end])
        options: dict[str, Any] = {
            "rows": rows,
            "columns": cols,
            "samples_per_pixel": 1,
            "bits_allocated": s.bits_allocated,
            "bits_stored": s.bits_stored,
            "pixel_representation": s.pixel_representation,
            "photometric_interpretation": s.photometric_interpretation or "MONOCHROME2",
            "number_of_frames": s.frames,
        }

        def compressed(k: int) -> npt.NDArray[Any]:
            arr, _ = decoder.as_array(value, index=k, decoding_plugin="pylibjpeg", **options)
            return arr.reshape(rows, cols)

        return compressed
    # Big endian, deflated, 1-bit: pydicom reads the object (a parsed dataset where it has the
    # pixels, which a deflated object's has, else the bytes again).
    from pydicom.pixels.utils import pixel_array

    source: Dataset | io.BytesIO = p.dataset if PIXEL_DATA in p.dataset else io.BytesIO(p.data)

    def via_pydicom(k: int) -> npt.NDArray[Any]:
        if isinstance(source, io.BytesIO):
            source.seek(0)
        return pixel_array(source, index=k).reshape(rows, cols)

    return via_pydicom


def _may_overflow(stored: np.dtype[Any], slope: float, intercept: float) -> bool:
    """Whether some value of the stored type, rescaled, lies beyond float32's range."""
    if stored.kind not in "biu":
        return True
    info = np.iinfo(stored) if stored.kind != "b" else np.iinfo(np.uint8)
    return max(abs(info.min * slope + intercept), abs(info.max * slope + intercept)) > FLOAT32_MAX


def _store(target: npt.NDArray[Any], values: npt.NDArray[Any], slope: float, intercept: float) -> None:
    """Write one frame into its place in the volume, rescaled on the way when needed.

    Rejected (non_finite_data) where the rescaled values overflow float32: the slope and
    intercept are each within it (sniff checked them), but not every product of a stored value.
    The values are only looked at where their type's range could overflow (never, for real data).
    """
    if slope == 1.0 and intercept == 0.0:
        np.copyto(target, values, casting="unsafe")
        return
    if target.dtype.kind == "f":
        # An overflow to inf is what is looked for below, not something to warn about.
        with np.errstate(over="ignore", invalid="ignore"):
            np.multiply(values, slope, out=target, casting="unsafe")
            target += np.float32(intercept)
        # min/max expose an inf (or NaN) without allocating a mask.
        if _may_overflow(values.dtype, slope, intercept) and not (
            math.isfinite(float(target.min())) and math.isfinite(float(target.max()))
        ):
            _reject(
                ReasonCode.NON_FINITE_DATA,
                f"The rescale (slope {slope:g}, intercept {intercept:g}) takes the stored values "
                f"{values.min()}..{values.max()} beyond float32's range (+-{FLOAT32_MAX:.3g}): "
                "the volume would hold infinite values.",
            )
        return
    # Integral rescale into an integer type chosen to hold the result (see _output_dtype).
    np.multiply(values, int(slope), out=target, casting="unsafe")
    target += target.dtype.type(int(intercept))


def _decode(
    images: list[ParsedInstance],
    frames: list[_Frame],
    targets: npt.NDArray[Any],
    dtype: np.dtype[Any],
    workers: int | None,
) -> int:
    """Decode every frame into targets[k]; returns the number of threads used."""
    decoders: dict[int, _Decoder] = {}
    for f in frames:
        if f.instance not in decoders:
            decoders[f.instance] = _frame_decoder(images[f.instance])

    def one(k: int) -> None:
        f = frames[k]
        try:
            values = decoders[f.instance](f.index)
        except (Rejected, MemoryError, KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:  # decoders in Rust panic (pyo3 PanicException: a BaseException)
            syntax = _uid.UID(images[f.instance].summary.transfer_syntax).name
            _reject(
                ReasonCode.TRUNCATED,
                f"The pixel data ({syntax}) of an image could not be decoded: it is damaged or cut "
                f"off ({type(exc).__name__}: {exc}).",
            )
        if values.shape != targets.shape[1:]:
            _reject(
                ReasonCode.INCONSISTENT_GEOMETRY,
                f"An image decodes to {values.shape[0]}x{values.shape[1]} pixels; its header says "
                f"{targets.shape[1]}x{targets.shape[2]}.",
            )
        _store(targets[k], values, f.slope, f.intercept)

    syntaxes = {images[f.instance].summary.transfer_syntax for f in frames}
    wanted = workers if workers is not None else min(8, os.cpu_count() or 1)
    parallel = wanted > 1 and len(frames) >= _MIN_PARALLEL_FRAMES and syntaxes <= _PARALLEL_SYNTAXES
    if not parallel:
        for k in range(len(frames)):
            one(k)
        return 1
    with ThreadPoolExecutor(max_workers=wanted, thread_name_prefix="dicom-decode") as pool:
        # list() re-raises the first failure (a Rejected) here.
        list(pool.map(one, range(len(frames))))
    return wanted
