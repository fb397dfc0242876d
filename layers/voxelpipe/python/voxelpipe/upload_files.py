"""The files of an upload: the names uploaders declare, and the names the server stores them under.

An uploader's file name can carry identifying text (`PATIENTNAME_MRN0042.nii.gz`), so it is kept
only in the study's own record (the manifest, shown to its tenant): every object key, derived
object, result and audit row uses the name the server chose for the file (`00000.nii.gz`): its
position in the manifest and, from a short list, its type's extension, which the pipeline reads.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from typing import Final, TypedDict

from voxelpipe.rejections import ReasonCode, Rejected

__all__ = ["ManifestEntry", "check_upload_name", "manifest", "object_name"]

_MAX_NAME_BYTES: Final = 255
_PERCENT_ESCAPE: Final = re.compile(r"%[0-9A-Fa-f]{2}")


def check_upload_name(name: str) -> str:
    """Return the uploader's file name if it is a plain file name, else reject it (invalid_name).

    `name` is the name the uploader gave (the last part of the key they chose), not our S3 key:
    it must not be able to steer any path we derive from it.
    """
    normal = unicodedata.normalize("NFKC", name)
    problem = None
    if not name.strip():
        problem = "is empty"
    elif len(name.encode("utf-8", "surrogatepass")) > _MAX_NAME_BYTES:
        problem = f"is longer than {_MAX_NAME_BYTES} bytes"
    elif any(unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Zl", "Zp") for ch in name):
        # Control, format (e.g. right-to-left override), lone surrogates, line breaks.
        problem = "contains control or invisible characters"
    elif any(sep in normal for sep in ("/", "\\", ":")):
        # NFKC first: fullwidth and other look-alike slashes fold into real ones.
        problem = "contains a path separator or drive letter"
    elif normal.startswith(".") or normal.endswith((".", " ")):
        problem = "starts with a dot or ends with a dot or space"
    elif _PERCENT_ESCAPE.search(name):
        problem = "contains percent-encoded characters"
    if problem is not None:
        raise Rejected(
            ReasonCode.INVALID_NAME, f"The file name {name!r} {problem}; rename the file and upload it again."
        )
    return name


# Extensions an object name keeps (longest first): how the pipeline tells a .zip of DICOM objects
# from one object, and what a person downloading it expects.
_KEPT_EXTENSIONS: Final = (".nii.gz", ".nii", ".zip", ".dcm")


class ManifestEntry(TypedDict):
    """One declared file: the uploader's name, the server's object name for it, its exact size."""

    name: str
    object: str
    size: int


def object_name(index: int, declared_name: str) -> str:
    """The name the server stores the `index`-th declared file under: nothing of the declared name
    but a known extension."""
    lowered = declared_name.lower()
    extension = next((ext for ext in _KEPT_EXTENSIONS if lowered.endswith(ext)), "")
    return f"{index:05d}{extension}"


def manifest(files: Sequence[tuple[str, int]]) -> list[ManifestEntry]:
    """The manifest of declared (name, size) files, each with its object name."""
    return [
        ManifestEntry(name=name, object=object_name(index, name), size=size)
        for index, (name, size) in enumerate(files)
    ]
