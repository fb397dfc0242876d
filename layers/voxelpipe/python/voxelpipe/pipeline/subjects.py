"""Subjects (docs/subjects.md): a study gets its subject, and the subject's record follows its studies.

A study's subject lives on the study (`subject`: subject_ref, age, sex; `subject_key` for the
subject index; `scan_date`, shifted). The tenant's `SubjectRecord` summarises the subject's studies
(how many, sex, the latest age, first and last scan date) and is rebuilt from them whenever one of
them gets the subject or is deleted, so it never drifts from what the studies say. The index may
lag a write by a moment: the study at hand is merged in (or left out) explicitly.
"""

from __future__ import annotations

from datetime import date
from typing import Any

from voxelpipe import tracking
from voxelpipe.ports import StudyStore, study_order
from voxelpipe.pseudonyms import Pseudonyms
from voxelpipe.records import StudyRecord, SubjectRecord, subject_key
from voxelpipe.status import StudyStatus


def shifted_scan_date(pseudonyms: Pseudonyms, tenant: str, subject_ref: str, real: date) -> str:
    """The scan date as stored: shifted by the subject's offset, ISO YYYY-MM-DD."""
    return pseudonyms.shift_date(real, tenant, subject_ref).isoformat()


def give_subject(
    store: StudyStore, study: StudyRecord, subject: dict[str, Any], scan_date: str | None
) -> StudyRecord:
    """Record the study's subject ({"subject_ref", "age", "sex"}) and (shifted) scan date, then
    refresh the subject's record. Returns the study as now stored."""
    ref = subject["subject_ref"]
    changes = {"subject": subject, "subject_key": subject_key(study.tenant, ref), "scan_date": scan_date}
    store.set_study_fields(study.study_id, changes)
    stored = store.get_study(study.study_id)
    if stored is None or stored.status == StudyStatus.DELETED:
        # Deleted meanwhile (its step still running): it keeps no subject, and the subject no study.
        store.set_study_fields(study.study_id, dict.fromkeys(changes))
        refresh_subject(store, study.tenant, ref, excluding=study.study_id)
        return study
    refresh_subject(store, study.tenant, ref, including=stored)
    return stored


def refresh_subject(
    store: StudyStore,
    tenant: str,
    subject_ref: str,
    *,
    including: StudyRecord | None = None,
    excluding: str | None = None,
) -> SubjectRecord | None:
    """Rebuild the subject's record from its studies (with `including`, without the study
    `excluding` names); delete it when none is left. Returns the record written, or None."""
    studies = {s.study_id: s for s in store.studies_of_subject(tenant, subject_ref)}
    if including is not None:
        studies[including.study_id] = including
    studies.pop(excluding or "", None)
    if not studies:
        store.forget_subject(tenant, subject_ref)
        return None
    ordered = sorted(studies.values(), key=study_order)
    subjects = [s.subject or {} for s in ordered]
    ages = [s["age"] for s in subjects if s.get("age") is not None]
    sexes = [s["sex"] for s in subjects if s.get("sex")]
    dates = [s.scan_date for s in ordered if s.scan_date]
    existing = store.get_subject(tenant, subject_ref)
    at = tracking.now()
    record = SubjectRecord(
        tenant,
        subject_ref,
        sex=sexes[-1] if sexes else None,
        age=ages[-1] if ages else None,
        first_scan_date=min(dates) if dates else None,
        last_scan_date=max(dates) if dates else None,
        studies=len(ordered),
        created_at=existing.created_at if existing is not None else at,
        updated_at=at,
    )
    store.save_subject(record)
    return record
