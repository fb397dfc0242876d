"""De-identification: the DICOM Basic Application Level Confidentiality Profile.

``deidentify(ds, uid_map)`` applies the Basic Profile of DICOM PS3.15 Annex E, Table E.1-1
("Application Level Confidentiality Profile Attributes"), edition 2024b.  The table is data:
``ps3.15-2024b-table-e.1-1.csv`` beside this module (shipped with the package), one row an
attribute with its Basic Profile action as the standard prints it, loaded into ``BASIC_PROFILE``
(tag -> action).  Moving to another edition is a new file (and ``PROFILE_EDITION``).  The codes:

* X remove; Z empty value; D a dummy value (by VR); U a replacement UID (``uid_map``);
* the conditional codes name the options between which an IOD's attribute type decides (X/Z:
  Type 3 vs 2, X/D: 3 vs 1, Z/D: 2 vs 1, X/Z/D). Without an IOD table we take the choice that
  keeps every IOD conformant: X/Z -> Z, Z/D, X/D and X/Z/D -> D. Sequences get no invented
  items: X/D -> X and X/Z/D -> Z for a sequence, and D -> one empty item;
* X/Z/U* (Referenced Image / Source Image Sequence) keeps the sequence and replaces the instance
  UIDs within it (its items go through the table like everything else);
* every listed attribute is treated wherever it occurs, sequence items included (E.1.1);
* all private attributes are removed (the Basic Profile's X for "(gggg,eeee) where gggg is odd");
  so are curve data (50xx) and overlays (60xx: Overlay Data and Comments are X; the rest of an
  overlay is meaningless without them), and the file meta AE titles (0002,0016-0018);
* Patient Identity Removed (0012,0062) = YES, De-identification Method (0012,0063) and its Code
  Sequence (0012,0064: DCM 113100 "Basic Application Confidentiality Profile") are set, and
  Longitudinal Temporal Information Modified (0028,0303) = REMOVED (dates are removed or zeroed).

With ``date_offset_days`` (the subject's offset, ``voxelpipe.pseudonyms``), the "Retain
Longitudinal Temporal Information with Modified Dates" option of PS3.15 (E.3.6) applies on top:

* every date is shifted by the offset instead of removed or blanked: each DA value, and the date
  part of each DT value, anywhere in the object (sequence items included). That is every date the
  Basic Profile would remove, blank or replace, and the dates it would keep too: a subject's dates
  all move together, so no real date is left beside shifted ones. Patient's Birth Date stays
  removed (Z): an age is kept where the sender gave one, a birth date never;
* a DT keeps only its shifted date (YYYYMMDD, a precision DT allows): its time of day and UTC
  offset are dropped, as the Basic Profile drops times;
* times (TM) are left to the Basic Profile (removed, emptied or zeroed where it lists them). A
  whole-day shift keeps intervals between scans exact to the day, which longitudinal measures need;
  the time of day is not needed for that, and a real time of day beside a shifted date would help
  match a scan to a scanner's or scheduler's log;
* a date that does not parse (not YYYYMMDD; a DT with less than a day's precision; a shift out of
  the calendar) is never kept: it gets the Basic Profile's action, and where the profile lists no
  action it is emptied;
* Longitudinal Temporal Information Modified = MODIFIED, DCM 113107 ("Retain Longitudinal Temporal
  Information Modified Dates Option") is added to the method code sequence, and the method text
  says so.

UIDs are replaced by ``UidMap``: a keyed hash (HMAC-SHA256) of the original UID, written as a
``2.25.<128-bit integer>`` UID (PS3.5 B.2).  The same key maps a UID to the same replacement in
every object and every process, so references between the objects of a study stay consistent
with no state to share between Lambda invocations; a key per study (``UidMap.for_study``) makes
the same original UID unlinkable across studies.

Burned In Annotation = YES: identifying text in the pixels, which header de-identification
cannot touch. ``burned_in="reject"`` (the default) raises Rejected(burned_in_phi); ``"flag"``
de-identifies the header and leaves the attribute YES for the caller to route the object to a
pixel-cleaning step or to a person.

(NIfTI uploads need no such step: Prepare writes the canonical volume in a fresh header,
``voxelpipe.volume.with_fresh_header``, which carries none of the upload's free text.)
"""

from __future__ import annotations

import copy
import csv
import hashlib
import hmac
import io
import re
from collections.abc import Mapping
from datetime import date, datetime, timedelta
from importlib import resources
from types import MappingProxyType
from typing import Any, Final, TypeVar

import pydicom
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence

from voxelpipe.dicom.sniff import BurnedInPolicy
from voxelpipe.rejections import ReasonCode, Rejected

__all__ = [
    "BASIC_PROFILE",
    "DEIDENTIFICATION_METHOD",
    "DEIDENTIFICATION_METHOD_MODIFIED_DATES",
    "MODIFIED_DATES_CODE",
    "PROFILE_EDITION",
    "TABLE_FILE",
    "UidMap",
    "action_for",
    "deidentify",
    "deidentify_bytes",
]

PROFILE_EDITION: Final = "2024b"
# (0012,0063) is LO: at most 64 characters.
DEIDENTIFICATION_METHOD: Final = f"DICOM PS3.15 E.1 Basic Profile ({PROFILE_EDITION}); voxelpipe"
# With the modified-dates option (E.3.6); also within 64 characters.
DEIDENTIFICATION_METHOD_MODIFIED_DATES: Final = (
    f"PS3.15 E.1 Basic Profile ({PROFILE_EDITION}), modified dates; voxelpipe"
)
# DICOM PS3.16 CID 7050 "De-identification Method": (code value, code meaning).
BASIC_PROFILE_CODE: Final = ("113100", "Basic Application Confidentiality Profile")
MODIFIED_DATES_CODE: Final = ("113107", "Retain Longitudinal Temporal Information Modified Dates Option")
_PATIENT_BIRTH_DATE: Final = 0x00100030
_DT_PATTERN: Final = re.compile(r"(\d{8})(\d{0,6}(\.\d{1,6})?)?([+-]\d{4})?")

# The table, as data: DICOM PS3.15 (edition PROFILE_EDITION), Annex E, Table E.1-1, one row an
# attribute (group, element, attribute name, Basic Profile action). It ships in the package.
TABLE_FILE: Final = f"ps3.15-{PROFILE_EDITION}-table-e.1-1.csv"
_ACTIONS: Final = frozenset({"X", "Z", "D", "U", "Z/D", "X/Z", "X/D", "X/Z/D", "X/Z/U*"})


def _load_table() -> dict[int, str]:
    """tag -> action from TABLE_FILE ('#' lines are its notes). Raises ValueError on a bad row."""
    text = resources.files("voxelpipe.dicom").joinpath(TABLE_FILE).read_text(encoding="utf-8")
    rows = csv.DictReader(line for line in text.splitlines() if not line.startswith("#"))
    table: dict[int, str] = {}
    for row in rows:
        group, element, action = row["group"], row["element"], row["basic_profile"]
        tag = int(group, 16) << 16 | int(element, 16)
        if action not in _ACTIONS:
            raise ValueError(f"({group},{element}): unknown action {action!r}")
        if tag in table:
            raise ValueError(f"({group},{element}) is listed twice")
        table[tag] = action
    return table


# tag -> Basic Profile action code, as Table E.1-1 prints it.
BASIC_PROFILE: Final[Mapping[int, str]] = MappingProxyType(_load_table())
# Repeating groups: Curve Data (50xx,xxxx) X; Overlay Data (60xx,3000) and Overlay Comments
# (60xx,4000) X -- we drop the whole overlay group.
_REPEATING: Final = ((0xFF000000, 0x50000000), (0xFF000000, 0x60000000))

_DUMMY_TEXT: Final = "ANONYMIZED"
_DUMMIES: Final[dict[str, Any]] = {
    "DA": "19000101",
    "TM": "000000",
    "DT": "19000101000000",
    "AS": "000Y",
    "IS": "0",
    "DS": "0",
    "US": 0,
    "SS": 0,
    "UL": 0,
    "SL": 0,
    "UV": 0,
    "SV": 0,
    "FL": 0.0,
    "FD": 0.0,
    "OB": b"\x00\x00",
    "OW": b"\x00\x00",
    "OD": b"\x00" * 8,
    "OF": b"\x00" * 4,
    "OL": b"\x00" * 4,
    "OV": b"\x00" * 8,
    "UN": b"\x00\x00",
    "UR": "urn:anonymized",
}


def action_for(tag: int) -> str | None:
    """The Basic Profile's action for a (public) tag, or None where the table does not list it."""
    action = BASIC_PROFILE.get(tag)
    if action is None and any(tag & mask == value for mask, value in _REPEATING):
        return "X"
    return action


class UidMap:
    """Replacement UIDs: ``2.25.<int>`` from an HMAC-SHA256 of the original, under a secret key.

    Deterministic (same key and UID, same replacement, in any process), so the objects of a study
    keep their references without shared state; not reversible without the key.
    """

    def __init__(self, key: bytes) -> None:
        if len(key) < 16:
            raise ValueError("the key must be at least 16 bytes")
        self._key = key
        self._cache: dict[str, str] = {}

    @classmethod
    def for_study(cls, secret: bytes, study_id: str) -> UidMap:
        """A map of its own per study: the same original UID maps differently in another study."""
        return cls(hmac.new(secret, study_id.encode("utf-8"), hashlib.sha256).digest())

    def __call__(self, uid: str) -> str:
        uid = str(uid).strip("\x00 ")
        if not uid:
            return uid
        mapped = self._cache.get(uid)
        if mapped is None:
            digest = hmac.new(self._key, uid.encode("ascii", "replace"), hashlib.sha256).digest()
            # 128 bits, as a UUID-derived UID (PS3.5 B.2): at most 44 characters, within UI's 64.
            mapped = f"2.25.{int.from_bytes(digest[:16], 'big')}"
            self._cache[uid] = mapped
        return mapped


def _dummy(elem: DataElement, uid_map: UidMap) -> Any:
    vr = elem.VR
    if vr == "UI":
        return _mapped(elem.value, uid_map)
    return _DUMMIES.get(vr, _DUMMY_TEXT)


def _mapped(value: Any, uid_map: UidMap) -> Any:
    if value is None or value == "":
        return value
    if isinstance(value, str):
        return uid_map(value)
    return [uid_map(v) for v in value]  # multi-valued (e.g. Failed SOP Instance UID List)


def _shifted(value: str, vr: str, offset: timedelta) -> str | None:
    """One DA or DT value moved by `offset` (a DT reduced to its date); None when it does not parse."""
    text = value.strip(" \0")
    try:
        if vr == "DA":
            if len(text) != 8 or not text.isdigit():
                return None
            day = datetime.strptime(text, "%Y%m%d").date()
        else:
            match = _DT_PATTERN.fullmatch(text)
            if match is None:
                return None
            day = datetime.strptime(match.group(1), "%Y%m%d").date()
        moved: date = day + offset
    except (ValueError, OverflowError):  # not a calendar date, or shifted out of the calendar
        return None
    return f"{moved.year:04d}{moved.month:02d}{moved.day:02d}"


def _shift_dates(elem: DataElement, offset: timedelta) -> bool:
    """Shift a DA/DT element's every value in place; False (nothing changed) when one does not parse."""
    value = elem.value
    if value is None or value == "":
        return True  # nothing to shift, nothing to hide
    # A multi-valued element is a MultiValue (a sequence of strings); a single value, a string.
    values = [str(value)] if isinstance(value, (str, bytes)) else [str(v) for v in value]
    moved = [_shifted(v, elem.VR, offset) for v in values]
    if any(m is None for m in moved):
        return False
    elem.value = moved[0] if len(moved) == 1 else moved
    return True


def _apply(ds: Dataset, uid_map: UidMap, offset: timedelta | None = None) -> None:
    for tag in list(ds.keys()):
        elem = ds[tag]
        action = action_for(int(tag))
        is_seq = elem.VR == "SQ"
        if offset is not None and elem.VR in ("DA", "DT") and int(tag) != _PATIENT_BIRTH_DATE:
            if _shift_dates(elem, offset):
                continue
            if action is None:  # a date that does not parse is never kept
                elem.value = None
                continue
        if action is None:
            if is_seq:
                for item in elem.value:
                    _apply(item, uid_map, offset)
            continue
        if action == "X" or (is_seq and action == "X/D"):
            del ds[tag]
        elif action in ("Z", "X/Z") or (is_seq and action == "X/Z/D"):
            elem.value = Sequence() if is_seq else None
        elif action in ("D", "Z/D", "X/D", "X/Z/D"):
            # A sequence gets one empty item: a non-empty value with nothing in it.
            elem.value = Sequence([Dataset()]) if is_seq else _dummy(elem, uid_map)
        elif action == "U":
            elem.value = _mapped(elem.value, uid_map)
        elif action == "X/Z/U*":
            if is_seq:
                for item in elem.value:
                    _apply(item, uid_map, offset)  # keeps the references, with their UIDs replaced (U)
            else:
                elem.value = None
        else:  # pragma: no cover - the table holds only the codes above
            raise ValueError(f"unknown action {action!r}")


_DS = TypeVar("_DS", bound=Dataset)
# Application Entity titles in the file meta name the sending/receiving systems (the site).
_META_AE_TITLES: Final = (
    "SourceApplicationEntityTitle",
    "SendingApplicationEntityTitle",
    "ReceivingApplicationEntityTitle",
)


def deidentify(
    ds: _DS,
    uid_map: UidMap,
    *,
    burned_in: BurnedInPolicy = "reject",
    patient_pseudonym: str | None = None,
    date_offset_days: int | None = None,
) -> _DS:
    """A de-identified copy of `ds` (the Basic Profile; see the module's doc). `ds` is untouched.

    `patient_pseudonym`, if given (e.g. the study's subject_ref), becomes Patient ID and Patient's
    Name: a dummy value (D) that is not derived from the patient's identity. `date_offset_days`, if
    given (the subject's offset, never 0), applies the modified-dates option: dates shifted, not
    removed.
    """
    if date_offset_days == 0:
        raise ValueError("a date offset of 0 days would keep the real dates")
    offset = None if date_offset_days is None else timedelta(days=date_offset_days)
    if str(ds.get("BurnedInAnnotation", "")).strip().upper() == "YES" and burned_in == "reject":
        raise Rejected(
            ReasonCode.BURNED_IN_PHI,
            "The image is marked Burned In Annotation = YES: its pixels show identifying text, "
            "which de-identification cannot remove.",
        )
    out = copy.deepcopy(ds)
    out.remove_private_tags()  # recursive (Dataset.walk)
    _apply(out, uid_map, offset)
    meta = getattr(out, "file_meta", None)
    if isinstance(meta, FileMetaDataset):
        _apply(meta, uid_map)  # (0002,0003) U
        if "SOPInstanceUID" in out:
            meta.MediaStorageSOPInstanceUID = out.SOPInstanceUID
        for keyword in _META_AE_TITLES:
            if keyword in meta:
                delattr(meta, keyword)
    if patient_pseudonym is not None:
        out.PatientID = patient_pseudonym
        out.PatientName = patient_pseudonym
    out.PatientIdentityRemoved = "YES"
    codes = [BASIC_PROFILE_CODE] if offset is None else [BASIC_PROFILE_CODE, MODIFIED_DATES_CODE]
    out.DeidentificationMethod = (
        DEIDENTIFICATION_METHOD if offset is None else DEIDENTIFICATION_METHOD_MODIFIED_DATES
    )
    out.DeidentificationMethodCodeSequence = Sequence([_code(value, meaning) for value, meaning in codes])
    out.LongitudinalTemporalInformationModified = "REMOVED" if offset is None else "MODIFIED"
    return out


def _code(value: str, meaning: str) -> Dataset:
    code = Dataset()
    code.CodeValue = value
    code.CodingSchemeDesignator = "DCM"
    code.CodeMeaning = meaning
    return code


def deidentify_bytes(
    data: bytes,
    uid_map: UidMap,
    *,
    burned_in: BurnedInPolicy = "reject",
    patient_pseudonym: str | None = None,
    date_offset_days: int | None = None,
) -> bytes:
    """One DICOM object's bytes -> the de-identified object's bytes (same transfer syntax)."""
    ds = pydicom.dcmread(io.BytesIO(data), force=True)
    out = deidentify(
        ds,
        uid_map,
        burned_in=burned_in,
        patient_pseudonym=patient_pseudonym,
        date_offset_days=date_offset_days,
    )
    buffer = io.BytesIO()
    meta = getattr(out, "file_meta", None)
    complete = isinstance(meta, FileMetaDataset) and "TransferSyntaxUID" in meta and "SOPClassUID" in out
    out.save_as(buffer, enforce_file_format=complete)
    return buffer.getvalue()
