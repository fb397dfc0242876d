"""A series uploaded as one .zip: its DICOM files, read safely, in memory.

``read_series_zip(data, limits)`` -> [(name inside the archive, bytes)] of the entries that look
like DICOM objects, or Rejected:

* ``not_dicom``: not a ZIP archive, encrypted entries, or no DICOM object in it;
* ``truncated``: a damaged archive (cut-off central directory, bad CRC);
* ``invalid_name``: an entry name with path tricks (absolute, ``..``, backslashes, drive letters,
  control characters) or a name used twice: never produced by a plain "zip this folder", so the
  archive is refused rather than guessed at (nothing is ever written to disk here either way);
* ``too_large``: more entries than ``MAX_ENTRIES``, or more declared content than
  ``limits.max_upload_bytes``, checked from the central directory before anything is inflated;
* ``decompression_bomb``: an entry that expands more than ``limits.max_expansion_ratio`` times
  (beyond 1 MiB), or overlapping entries.

Folders nest freely.  Skipped (not rejected): directories, DICOMDIR (a media index, no pixels),
macOS/Windows litter (``__MACOSX/``, dot-files, Thumbs.db), nested archives (never opened) and
any other non-DICOM file (reports, JPEGs): the series is what the DICOM files in it are.
zipfile inflates an entry only up to its declared size and checks its CRC, so the declared sizes
checked up front bound what is read.
"""

from __future__ import annotations

import io
import posixpath
import unicodedata
import zipfile
from typing import Final, NoReturn

from voxelpipe.dicom.sniff import looks_like_dicom
from voxelpipe.limits import Limits
from voxelpipe.rejections import ReasonCode, Rejected

__all__ = ["MAX_ENTRIES", "read_series_zip"]

MAX_ENTRIES: Final = 20_000  # a long series is a few thousand files
_BOMB_FLOOR: Final = 1024 * 1024  # small entries may compress far (a blank frame): ignore the ratio
_LITTER: Final = frozenset({"thumbs.db", "desktop.ini", "dicomdir"})


def _reject(reason: ReasonCode, detail: str) -> NoReturn:
    raise Rejected(reason, detail)


def _check_name(name: str) -> None:
    problem = None
    normal = unicodedata.normalize("NFKC", name)
    if any(unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Zl", "Zp") for ch in name):
        problem = "control or invisible characters"
    elif "\\" in normal:
        problem = "a backslash"
    elif normal.startswith("/") or (len(normal) > 1 and normal[1] == ":"):
        problem = "an absolute path"
    elif ".." in normal.split("/"):
        problem = "a '..' component"
    if problem is not None:
        _reject(ReasonCode.INVALID_NAME, f"The archive entry {name!r} has {problem}; re-create the archive.")


def _skipped(name: str) -> bool:
    parts = name.split("/")
    base = parts[-1]
    return parts[0] == "__MACOSX" or base.startswith(".") or base.lower() in _LITTER


def read_series_zip(data: bytes, limits: Limits | None = None) -> list[tuple[str, bytes]]:
    """The DICOM objects of a .zip upload, as (name, bytes) in archive order (see the module doc)."""
    limits = limits or Limits()
    if not data.startswith(b"PK\x03\x04") and not data.startswith(b"PK\x05\x06"):
        _reject(ReasonCode.NOT_DICOM, "The upload is not a ZIP archive.")
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, OSError, EOFError) as exc:
        _reject(ReasonCode.TRUNCATED, f"The ZIP archive is damaged or cut off ({exc}).")
    with archive:
        infos = archive.infolist()
        if len(infos) > MAX_ENTRIES:
            _reject(
                ReasonCode.TOO_LARGE, f"The archive has {len(infos)} entries; the limit is {MAX_ENTRIES}."
            )
        names: set[str] = set()
        declared = 0
        for info in infos:
            _check_name(info.filename)
            if info.filename in names:
                _reject(ReasonCode.INVALID_NAME, f"The archive holds {info.filename!r} twice.")
            names.add(info.filename)
            declared += info.file_size
            ratio_limit = info.compress_size * limits.max_expansion_ratio
            if info.file_size > _BOMB_FLOOR and info.file_size > ratio_limit:
                _reject(
                    ReasonCode.DECOMPRESSION_BOMB,
                    f"The archive entry {info.filename!r} expands {info.file_size} bytes from "
                    f"{info.compress_size} (a decompression bomb); it was not inflated.",
                )
        if declared > limits.max_upload_bytes:
            _reject(
                ReasonCode.TOO_LARGE,
                f"The archive holds {declared} bytes; the limit is {limits.max_upload_bytes}.",
            )
        found: list[tuple[str, bytes]] = []
        for info in infos:
            name = info.filename
            if info.is_dir() or _skipped(posixpath.normpath(name)):
                continue
            if info.flag_bits & 0x1:
                _reject(
                    ReasonCode.NOT_DICOM, f"The archive entry {name!r} is encrypted; upload it unencrypted."
                )
            try:
                with archive.open(info) as entry:
                    content = entry.read(info.file_size + 1)
            except zipfile.BadZipFile as exc:
                if "overlap" in str(exc).lower():
                    _reject(ReasonCode.DECOMPRESSION_BOMB, f"The archive has overlapping entries ({exc}).")
                _reject(ReasonCode.TRUNCATED, f"The archive entry {name!r} is damaged ({exc}).")
            except (NotImplementedError, RuntimeError, ValueError, OSError, EOFError) as exc:
                _reject(ReasonCode.TRUNCATED, f"The archive entry {name!r} cannot be read ({exc}).")
            if len(content) > info.file_size:  # zipfile stops at the declared size; belt and braces
                _reject(
                    ReasonCode.DECOMPRESSION_BOMB, f"The archive entry {name!r} exceeds its declared size."
                )
            if content.startswith(b"PK\x03\x04") or not looks_like_dicom(content):
                continue  # nested archives are never opened; other files are not the series
            found.append((name, content))
    if not found:
        _reject(ReasonCode.NOT_DICOM, f"The archive's {len(infos)} entries hold no DICOM file.")
    return found
