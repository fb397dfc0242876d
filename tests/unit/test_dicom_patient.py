"""voxelpipe.dicom.patient: what an original says of its patient and scan date, read at the boundary."""

from __future__ import annotations

from datetime import date

import pytest
from pydicom.dataset import Dataset

from voxelpipe.dicom.patient import facts_of, read_age, read_date


@pytest.mark.parametrize(
    ("text", "years"),
    [("055Y", 55.0), ("006M", 0.5), ("052W", 1.0), ("010D", 0.03), ("55Y", None), ("055X", None), ("", None)],
)
def test_an_age_string_in_years(text: str, years: float | None) -> None:
    assert read_age(text) == years


def test_dates_parse_strictly() -> None:
    assert read_date("20240229") == date(2024, 2, 29)
    assert read_date("20230229") is None and read_date("2024-02-29") is None and read_date(None) is None


@pytest.mark.filterwarnings("ignore:Invalid value for VR CS")  # a lower-case sex, as senders write it
def test_facts_prefer_the_declared_age_then_whole_years_from_the_birth_date() -> None:
    ds = Dataset()
    ds.PatientID, ds.IssuerOfPatientID, ds.PatientSex = "MRN-1 ", "HOSP", "f"
    ds.SeriesDate, ds.PatientBirthDate = "20240105", "19700106"  # the day before the birthday
    facts = facts_of(ds)
    assert (facts.patient_id, facts.issuer_of_patient_id, facts.sex) == ("MRN-1", "HOSP", "F")
    assert facts.scan_date == date(2024, 1, 5) and facts.age_years == 53.0
    ds.StudyDate, ds.PatientAge, ds.PatientSex = "20240106", "054Y", "O"
    facts = facts_of(ds)
    assert facts.scan_date == date(2024, 1, 6) and facts.age_years == 54.0 and facts.sex is None
    empty = facts_of(Dataset())
    assert (empty.patient_id, empty.age_years, empty.sex, empty.scan_date) == (None, None, None, None)
