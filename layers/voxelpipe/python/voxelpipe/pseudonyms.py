"""Pseudonyms under the deployment's pseudonym secret: subjects, their date offsets, exam study ids.

Everything here is an HMAC-SHA256 under a key derived from one deployment secret (Secrets Manager,
`PSEUDONYM_SECRET_ARN`; read by `adapters.secrets.pseudonyms`), each purpose under its own derived
key, so one derivation never reveals another. Nothing derived here is stored beside what it came
from, and without the secret none of it can be recomputed from a guess:

- `date_offset_days(tenant, subject_ref)`: the subject's date shift, a whole number of days in
  [-MAX_OFFSET_DAYS, -MIN_OFFSET_DAYS] (1 to 10 years back, never 0). Every date of a subject moves
  by the same offset, so intervals between its scans are exact (docs/subjects.md). The offset is
  never stored: it is derived again wherever a date is shifted.
- `subject_ref_for_patient(tenant, patient_id, issuer)`: the pseudonymous subject of DICOM whose
  sender declared none, from the Patient ID and its issuer: the same patient of a tenant is the same
  subject in every exam, and the subject_ref cannot confirm a guessed Patient ID.
- `exam_study_id(tenant, study_instance_uid, generation)`: the study a network exam lands in.

No AWS here: the caller hands in the secret's bytes.
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import date, timedelta
from typing import Final

__all__ = ["MAX_OFFSET_DAYS", "MIN_OFFSET_DAYS", "SUBJECT_REF_PREFIX", "Pseudonyms"]

# The date offset's range: at least a year back (so a shifted date never passes for the real one by
# a few days' error), at most ten (shifted dates stay plausible for DICOM and for age arithmetic).
MIN_OFFSET_DAYS: Final = 365
MAX_OFFSET_DAYS: Final = 3652
# A derived subject_ref: "sub-" and 24 hex digits (96 bits), within the API's [A-Za-z0-9._-]{1,64}.
SUBJECT_REF_PREFIX: Final = "sub-"
_SUBJECT_HEX_DIGITS: Final = 24


def _derive(secret: bytes, purpose: str) -> bytes:
    return hmac.new(secret, f"voxelpipe/{purpose}".encode(), hashlib.sha256).digest()


def _digest(key: bytes, *parts: str) -> bytes:
    # NUL-separated: no field can run into the next ("a" + "bc" differs from "ab" + "c").
    return hmac.new(key, "\0".join(parts).encode("utf-8"), hashlib.sha256).digest()


class Pseudonyms:
    """The derivations under one deployment secret (at least 16 bytes)."""

    def __init__(self, secret: bytes) -> None:
        if len(secret) < 16:
            raise ValueError("the pseudonym secret must be at least 16 bytes")
        self._date_key = _derive(secret, "date-offset")
        self._subject_key = _derive(secret, "subject-ref")
        self._exam_key = _derive(secret, "exam-study-id")

    def date_offset_days(self, tenant: str, subject_ref: str) -> int:
        """The subject's date shift in days: negative, in [-MAX_OFFSET_DAYS, -MIN_OFFSET_DAYS]."""
        value = int.from_bytes(_digest(self._date_key, tenant, subject_ref)[:8], "big")
        span = MAX_OFFSET_DAYS - MIN_OFFSET_DAYS + 1
        return -(MIN_OFFSET_DAYS + value % span)

    def shift_date(self, d: date, tenant: str, subject_ref: str) -> date:
        """`d` moved by the subject's offset (the same for every date of the subject)."""
        return d + timedelta(days=self.date_offset_days(tenant, subject_ref))

    def subject_ref_for_patient(
        self, tenant: str, patient_id: str, issuer_of_patient_id: str | None = None
    ) -> str:
        """The pseudonymous subject_ref of a patient of `tenant`, as its sender identifies it (Patient
        ID, within its issuer's namespace; DICOM pads values with spaces, which do not count)."""
        patient = patient_id.strip(" \0")
        if not patient:
            raise ValueError("no Patient ID to derive a subject from")
        issuer = (issuer_of_patient_id or "").strip(" \0")
        digest = _digest(self._subject_key, tenant, issuer, patient)
        return SUBJECT_REF_PREFIX + digest.hex()[:_SUBJECT_HEX_DIGITS]

    def exam_study_id(self, tenant: str, study_instance_uid: str, generation: int = 0) -> str:
        """The study id of a network exam: the same for every transfer of the exam; a new
        generation after its study was deleted. Keyed: an id cannot confirm a guessed UID."""
        return _digest(self._exam_key, tenant, study_instance_uid, str(generation)).hex()[:32]
