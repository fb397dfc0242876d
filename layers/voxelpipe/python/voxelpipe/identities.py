"""The honest broker's record of one study: what de-identification replaced, and the originals.

`IdentityMap` is plain data (no pydicom, no AWS), so the port, its adapter and the functions that
only delete maps need nothing heavier: `uids` maps each pseudonymous UID ingest wrote to the
original it replaced; `patient` and `study` hold the original patient and study modules as DICOM
JSON (PS3.18 F.2, pydicom's `Dataset.to_json_dict`). Captured by Prepare, read only by egress
(voxelpipe.dicom.reidentify), deleted with the study (docs/dicom.md, "Honest broker").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# The originals kept: Patient and General Study modules (PS3.3 C.7.1.1, C.7.2.1), by keyword.
PATIENT_KEYWORDS = (
    "PatientName",
    "PatientID",
    "IssuerOfPatientID",
    "PatientBirthDate",
    "PatientSex",
    "OtherPatientIDsSequence",
)
STUDY_KEYWORDS = (
    "StudyInstanceUID",
    "StudyDate",
    "StudyTime",
    "AccessionNumber",
    "StudyID",
    "ReferringPhysicianName",
    "StudyDescription",
)


@dataclass(frozen=True)
class IdentityMap:
    """pseudonymous UID -> original UID, and the original patient and study modules (DICOM JSON)."""

    uids: dict[str, str] = field(default_factory=dict)
    patient: dict[str, Any] = field(default_factory=dict)
    study: dict[str, Any] = field(default_factory=dict)

    def merged(self, later: IdentityMap) -> IdentityMap:
        """This map with `later`'s entries added (a later attempt's instances); its modules win
        where it has them (the same exam's, read again)."""
        return IdentityMap(
            uids={**self.uids, **later.uids},
            patient={**self.patient, **later.patient},
            study={**self.study, **later.study},
        )
