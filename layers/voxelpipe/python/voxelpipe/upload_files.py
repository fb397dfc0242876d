"""The files of an upload: the names uploaders declare, checked before anything is derived from them."""

from __future__ import annotations

import re
import unicodedata
from typing import Final

from voxelpipe.rejections import ReasonCode, Rejected

__all__ = ["check_upload_name"]

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
