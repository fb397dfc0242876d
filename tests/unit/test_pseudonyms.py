"""voxelpipe.pseudonyms: keyed, per-purpose derivations under the deployment's pseudonym secret."""

from __future__ import annotations

import re
from datetime import date

import pytest

from voxelpipe.pseudonyms import MAX_OFFSET_DAYS, MIN_OFFSET_DAYS, SUBJECT_REF_PREFIX, Pseudonyms

SUBJECT_REF_PATTERN = re.compile(r"^[A-Za-z0-9._-]{1,64}$")  # CreateStudy's subject_ref
SECRET = b"s" * 32


def test_offsets_are_per_subject_within_the_range_and_never_zero() -> None:
    pseudonyms = Pseudonyms(SECRET)
    offsets = [pseudonyms.date_offset_days("clinic", f"subject-{n}") for n in range(2000)]
    assert all(-MAX_OFFSET_DAYS <= o <= -MIN_OFFSET_DAYS for o in offsets)
    assert 0 not in offsets
    # Spread over the range, not a few values: ~2000 draws from 3288 days.
    assert len(set(offsets)) > 1000
    assert min(offsets) < -MAX_OFFSET_DAYS + 100 and max(offsets) > -MIN_OFFSET_DAYS - 100


def test_an_offset_is_stable_and_depends_on_tenant_subject_and_secret() -> None:
    one, again, other = Pseudonyms(SECRET), Pseudonyms(SECRET), Pseudonyms(b"t" * 32)
    assert one.date_offset_days("clinic", "S1") == again.date_offset_days("clinic", "S1")
    samples = [("clinic", f"S{n}") for n in range(20)]
    assert [one.date_offset_days(*s) for s in samples] != [other.date_offset_days(*s) for s in samples]
    assert [one.date_offset_days(*s) for s in samples] != [
        one.date_offset_days("other-clinic", ref) for _, ref in samples
    ]


def test_shifting_keeps_intervals_exact() -> None:
    pseudonyms = Pseudonyms(SECRET)
    first, second = date(2020, 2, 28), date(2024, 3, 1)  # across leap days
    shifted = [pseudonyms.shift_date(d, "clinic", "S1") for d in (first, second)]
    assert shifted[1] - shifted[0] == second - first
    assert shifted[0] != first
    assert (first - shifted[0]).days == -pseudonyms.date_offset_days("clinic", "S1")


def test_a_patient_gets_one_valid_subject_ref_per_tenant_and_issuer() -> None:
    pseudonyms = Pseudonyms(SECRET)
    ref = pseudonyms.subject_ref_for_patient("clinic", "MRN-0012345", "HOSP")
    assert SUBJECT_REF_PATTERN.match(ref) and ref.startswith(SUBJECT_REF_PREFIX)
    assert "0012345" not in ref
    # DICOM's padding does not make another patient; another issuer or tenant does.
    assert pseudonyms.subject_ref_for_patient("clinic", "MRN-0012345 ", "HOSP ") == ref
    assert pseudonyms.subject_ref_for_patient("clinic", "MRN-0012345", "OTHER") != ref
    assert pseudonyms.subject_ref_for_patient("clinic", "MRN-0012345", None) != ref
    assert pseudonyms.subject_ref_for_patient("lab", "MRN-0012345", "HOSP") != ref
    assert Pseudonyms(b"t" * 32).subject_ref_for_patient("clinic", "MRN-0012345", "HOSP") != ref
    with pytest.raises(ValueError):
        pseudonyms.subject_ref_for_patient("clinic", "  ")


def test_exam_study_ids_are_keyed_and_generational() -> None:
    pseudonyms = Pseudonyms(SECRET)
    uid = "1.2.826.0.1.3680043.10.1"
    study_id = pseudonyms.exam_study_id("clinic", uid)
    assert re.fullmatch(r"[0-9a-f]{32}", study_id)
    assert pseudonyms.exam_study_id("clinic", uid) == study_id
    assert pseudonyms.exam_study_id("clinic", uid, 1) != study_id
    assert pseudonyms.exam_study_id("lab", uid) != study_id
    assert Pseudonyms(b"t" * 32).exam_study_id("clinic", uid) != study_id


def test_a_short_secret_is_refused() -> None:
    with pytest.raises(ValueError):
        Pseudonyms(b"short")
