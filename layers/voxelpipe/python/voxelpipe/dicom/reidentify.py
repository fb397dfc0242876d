"""Re-identification at the egress boundary: the inverse of de-identification, for the tenant's own PACS.

Ingest replaced every UID by a keyed hash (`deidentify.UidMap`) and the patient and study modules
by dummies. `capture_identities(original, uid_map)` records, from an original object in hand, what
de-identifying it with `uid_map` replaces (pseudonym -> original UID, exactly the UIDs the Basic
Profile's table maps) and its patient and study modules; `reidentify(ds, identities)` gives an
output (a SEG, an SR, an encapsulated PDF made from the de-identified series) its originals back:
every UI value, wherever it is (sequences included: Referenced Series, Source Image, the study
reference...), that is a known pseudonym becomes its original; the patient and study modules are
the original's (so the object files into the original exam); the de-identification markers go.
UIDs the output created itself (its own series and instance) are no pseudonyms and stay.
"""

from __future__ import annotations

import copy
import io
from collections.abc import Iterator
from typing import Final, TypeVar

import pydicom
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset

from voxelpipe.dicom.deidentify import UidMap, action_for
from voxelpipe.identities import PATIENT_KEYWORDS, STUDY_KEYWORDS, IdentityMap

__all__ = ["capture_identities", "reidentify"]

# The table's actions that map a UI element's value through the UidMap (`deidentify._apply`: U, and
# a UI dummy is its mapped UID); X/Z/U* sequences keep their items, whose UIDs are mapped in turn.
_MAPPED: Final = frozenset({"U", "D", "Z/D", "X/D", "X/Z/D"})
_KEPT_SEQUENCES: Final = frozenset({None, "X/Z/U*"})
# What de-identification added to say so (PS3.15 E.1); none of it is true of a re-identified object.
_DEIDENTIFICATION_MARKERS: Final = (
    "PatientIdentityRemoved",
    "DeidentificationMethod",
    "DeidentificationMethodCodeSequence",
    "LongitudinalTemporalInformationModified",
)
# Type 2 attributes of the Patient and General Study modules: present, if empty, when the original
# had no value; the others (Type 3) are left out.
_TYPE_2: Final = frozenset(
    {
        "PatientName",
        "PatientID",
        "PatientBirthDate",
        "PatientSex",
        "StudyDate",
        "StudyTime",
        "AccessionNumber",
        "StudyID",
        "ReferringPhysicianName",
    }
)


def _values(elem: DataElement) -> list[str]:
    value = elem.value
    if value is None or value == "":
        return []
    values = [value] if isinstance(value, str) else list(value)
    return [str(v).strip("\x00 ") for v in values if str(v).strip("\x00 ")]


def _mapped_uids(ds: Dataset) -> Iterator[str]:
    """The UI values of `ds` that de-identification replaces, as `deidentify._apply` walks it."""
    for elem in ds:
        action = action_for(int(elem.tag))
        if elem.VR == "SQ":
            if action in _KEPT_SEQUENCES:
                for item in elem.value:
                    yield from _mapped_uids(item)
        elif elem.VR == "UI" and action in _MAPPED:
            yield from _values(elem)


def _module(ds: Dataset, keywords: tuple[str, ...]) -> dict[str, object]:
    module = Dataset()
    for keyword in keywords:
        if keyword in ds:
            module[keyword] = copy.deepcopy(ds[keyword])
    return module.to_json_dict()


def capture_identities(original: bytes | Dataset, uid_map: UidMap) -> IdentityMap:
    """What de-identifying `original` with `uid_map` replaces: pseudonym -> original UID for every
    UID it maps (file meta included), and the original patient and study modules."""
    ds = original if isinstance(original, Dataset) else pydicom.dcmread(io.BytesIO(original), force=True)
    originals = list(_mapped_uids(ds))
    meta = getattr(ds, "file_meta", None)
    if meta is not None:
        originals.extend(_mapped_uids(meta))
    return IdentityMap(
        uids={uid_map(uid): uid for uid in originals},
        patient=_module(ds, PATIENT_KEYWORDS),
        study=_module(ds, STUDY_KEYWORDS),
    )


def _restore_uids(ds: Dataset, uids: dict[str, str]) -> None:
    for elem in ds:
        if elem.VR == "SQ":
            for item in elem.value:
                _restore_uids(item, uids)
        elif elem.VR == "UI" and elem.value not in (None, ""):
            if isinstance(elem.value, str):
                elem.value = uids.get(elem.value.strip("\x00 "), elem.value)
            else:
                elem.value = [uids.get(str(v).strip("\x00 "), v) for v in elem.value]


def _restore_module(ds: Dataset, module: dict[str, object], keywords: tuple[str, ...]) -> None:
    original = Dataset.from_json(module)
    for keyword in keywords:
        if keyword in original:
            ds[keyword] = original[keyword]
        elif keyword in ds:
            if keyword in _TYPE_2:
                ds[keyword].value = None  # the original had none: empty, as Type 2 allows
            else:
                delattr(ds, keyword)


_DS = TypeVar("_DS", bound=Dataset)


def reidentify(ds: _DS, identities: IdentityMap) -> _DS:
    """A copy of `ds` with its originals back (see the module's doc). `ds` is untouched."""
    out = copy.deepcopy(ds)
    _restore_uids(out, identities.uids)
    meta = getattr(out, "file_meta", None)
    if meta is not None:
        _restore_uids(meta, identities.uids)
    _restore_module(out, identities.patient, PATIENT_KEYWORDS)
    _restore_module(out, identities.study, STUDY_KEYWORDS)
    for keyword in _DEIDENTIFICATION_MARKERS:
        if keyword in out:
            delattr(out, keyword)
    return out
