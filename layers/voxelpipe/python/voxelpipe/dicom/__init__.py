"""DICOM for voxelpipe, as pure functions (no AWS): sniff one object, assemble a series into a
volume, de-identify, read a series archive.

* ``read_instance_header(data)``: the per-object check at ingest (header only) -> InstanceSummary.
* ``check_series(summaries)``: the series-level checks at upload completion, from those summaries.
* ``assemble_series(instances)``: Prepare's series -> volume (RAS+ NIfTI image + report).
* ``deidentify(ds, uid_map)`` / ``deidentify_bytes``: PS3.15 Basic Application Level
  Confidentiality Profile (its Table E.1-1 is a data file in this package).
* ``read_series_zip(data, limits)``: the DICOM files of a .zip upload, safely.

Every refusal is a ``voxelpipe.rejections.Rejected`` with a ReasonCode.
"""

from voxelpipe.dicom.archive import read_series_zip
from voxelpipe.dicom.deidentify import (
    BASIC_PROFILE,
    DEIDENTIFICATION_METHOD,
    UidMap,
    deidentify,
    deidentify_bytes,
)
from voxelpipe.dicom.series import SeriesReport, SeriesVolume, assemble_series, check_series
from voxelpipe.dicom.sniff import (
    BurnedInPolicy,
    InstanceSummary,
    NeedMoreData,
    looks_like_dicom,
    read_instance_header,
)

__all__ = [
    "BASIC_PROFILE",
    "DEIDENTIFICATION_METHOD",
    "BurnedInPolicy",
    "InstanceSummary",
    "NeedMoreData",
    "SeriesReport",
    "SeriesVolume",
    "UidMap",
    "assemble_series",
    "check_series",
    "deidentify",
    "deidentify_bytes",
    "looks_like_dicom",
    "read_instance_header",
    "read_series_zip",
]
