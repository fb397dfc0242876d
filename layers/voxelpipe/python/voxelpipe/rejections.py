"""Why an upload is refused: the reason codes and the one exception every check raises.

NIfTI validation, the DICOM checks, ingest and Prepare all reject through `Rejected`, so the
uploader always gets a reason code from this list and a sentence.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["ReasonCode", "Rejected"]


class ReasonCode(StrEnum):
    """Why an upload was rejected; stored with the REJECTED status and shown to the uploader."""

    NOT_AN_IMAGE = "not_an_image"  # no NIfTI (or gzip-of-NIfTI) magic: text, PNG, zip, DICOM...
    TRUNCATED = "truncated"  # ends early (cut-off stream, short data, empty file) or corrupt gzip
    # NIfTI magic, but header fields that cannot describe a volume; or a DICOM object whose rescale
    # (Rescale Slope/Intercept, Dose Grid Scaling) cannot be applied
    BAD_HEADER = "bad_header"
    UNSUPPORTED_DIMENSIONS = "unsupported_dimensions"  # not one 3-D volume, or axes too small/big
    TOO_LARGE = "too_large"  # upload or declared volume beyond Limits
    DECOMPRESSION_BOMB = "decompression_bomb"  # gzip expands beyond the declared size
    NON_FINITE_DATA = "non_finite_data"  # NaN/Inf voxels after scaling (NIfTI or DICOM)
    INVALID_NAME = "invalid_name"  # path tricks or control characters in the file name
    UNKNOWN_ANALYSIS = "unknown_analysis"  # a requested analysis is not in the catalogue
    # DICOM uploads (voxelpipe.dicom): one object at ingest, or the series at Prepare.
    NOT_DICOM = "not_dicom"  # no DICOM preamble or plausible header (or an archive without DICOM)
    NO_PIXEL_DATA = "no_pixel_data"  # a DICOM object without image pixels (SR, RT plan, DICOMDIR...)
    MIXED_SERIES = "mixed_series"  # objects of more than one study in one upload (or one series' checks)
    NO_SERIES_SELECTED = "no_series_selected"  # the tenant's routing rules selected no series of the exam
    INCONSISTENT_GEOMETRY = "inconsistent_geometry"  # missing/mixed orientation, size, spacing
    UNSUPPORTED_TRANSFER_SYNTAX = "unsupported_transfer_syntax"  # pixels in an encoding we can't decode
    INCOMPLETE_SERIES = "incomplete_series"  # slices missing from the series (a gap in the stack)
    BURNED_IN_PHI = "burned_in_phi"  # Burned In Annotation says the pixels show identifying text


class Rejected(Exception):
    """The upload is refused; `detail` is a sentence for the uploader."""

    def __init__(self, reason: ReasonCode, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail

    def __reduce__(self) -> tuple[type[Rejected], tuple[ReasonCode, str]]:
        # Keeps the two fields through pickling (multiprocessing, Lambda error payloads).
        return (type(self), (self.reason, self.detail))
