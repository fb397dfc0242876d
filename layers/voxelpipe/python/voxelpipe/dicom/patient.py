"""What an original DICOM object says of its patient and scan date, read at the ingest boundary
before de-identification (docs/subjects.md): the Patient ID (and its issuer) a subject_ref is
derived from, the age and sex kept on the study's subject, and the real scan date that is shifted
before it is stored. None of it is stored as read: the caller keeps only the pseudonym, the age in
years, M/F, and the shifted date.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from datetime import date, datetime

import pydicom
from pydicom.dataset import Dataset

__all__ = ["PatientFacts", "patient_facts", "read_age", "read_date"]

_AGE = re.compile(r"(\d{3})([DWMY])")
_DAYS_PER_UNIT = {"D": 1.0, "W": 7.0, "M": 365.25 / 12, "Y": 365.25}


@dataclass(frozen=True)
class PatientFacts:
    patient_id: str | None
    issuer_of_patient_id: str | None
    age_years: float | None  # Patient's Age, else whole years from the birth date to the study
    sex: str | None  # "M" or "F" (other values say nothing a norm can use)
    scan_date: date | None  # Study Date, else Series Date, else Acquisition Date: the real date


def read_date(value: object) -> date | None:
    """A DA value (YYYYMMDD) as a date; None when absent or not a calendar date."""
    text = str(value or "").strip(" \0")
    if len(text) != 8 or not text.isdigit():
        return None
    try:
        return datetime.strptime(text, "%Y%m%d").date()
    except ValueError:
        return None


def read_age(value: object) -> float | None:
    """An AS value (nnnD/W/M/Y) in years (whole years for Y, two decimals otherwise); None if malformed."""
    match = _AGE.fullmatch(str(value or "").strip(" \0"))
    if match is None:
        return None
    count, unit = int(match.group(1)), match.group(2)
    return float(count) if unit == "Y" else round(count * _DAYS_PER_UNIT[unit] / 365.25, 2)


def _whole_years(born: date, on: date) -> int | None:
    years = on.year - born.year - ((on.month, on.day) < (born.month, born.day))
    return years if 0 <= years <= 130 else None


def facts_of(ds: Dataset) -> PatientFacts:
    text = {
        k: str(ds.get(k, "") or "").strip(" \0") for k in ("PatientID", "IssuerOfPatientID", "PatientSex")
    }
    scan_date = next(
        (d for d in (read_date(ds.get(k)) for k in ("StudyDate", "SeriesDate", "AcquisitionDate")) if d), None
    )
    age = read_age(ds.get("PatientAge"))
    born = read_date(ds.get("PatientBirthDate"))
    if age is None and born is not None and scan_date is not None:
        years = _whole_years(born, scan_date)
        age = None if years is None else float(years)
    sex = text["PatientSex"].upper()
    return PatientFacts(
        patient_id=text["PatientID"] or None,
        issuer_of_patient_id=text["IssuerOfPatientID"] or None,
        age_years=age,
        sex=sex if sex in ("M", "F") else None,
        scan_date=scan_date,
    )


def patient_facts(data: bytes) -> PatientFacts:
    """The facts of one original object (its header only)."""
    return facts_of(pydicom.dcmread(io.BytesIO(data), force=True, stop_before_pixels=True))
