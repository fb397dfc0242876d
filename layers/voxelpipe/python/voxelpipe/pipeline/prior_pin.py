"""Which earlier study of the subject a study is compared with (the `longitudinal` analysis's prior),
chosen and fixed at dispatch (docs/pipeline.md, "Longitudinal: the prior study").

Plain records only: dispatch's Lambda ships no numpy (RunAnalysis loads the prior's volumes:
voxelpipe.pipeline.prior_load).
"""

from __future__ import annotations

from datetime import date

from voxelpipe.messages import PriorPin
from voxelpipe.ports import StudyStore
from voxelpipe.records import StudyRecord
from voxelpipe.status import StudyStatus

LONGITUDINAL = "longitudinal"
# What the prior must have run: the change is measured inside its brain mask.
PRIOR_NEEDS = "tissue-seg"
DAYS_PER_YEAR = 365.25


def subject_ref_of(study: StudyRecord) -> str | None:
    ref = (study.subject or {}).get("subject_ref")
    return ref if isinstance(ref, str) and ref else None


def _scan_date(study: StudyRecord) -> date | None:
    try:
        return date.fromisoformat(study.scan_date) if study.scan_date else None
    except ValueError:
        return None


def is_earlier(candidate: StudyRecord, study: StudyRecord) -> bool:
    """Whether `candidate` was scanned before `study`: by their scan dates when both have one (the
    same day: by when they were registered), else by when they were registered."""
    mine, theirs = _scan_date(study), _scan_date(candidate)
    if mine is not None and theirs is not None and mine != theirs:
        return theirs < mine
    return bool(candidate.created_at < study.created_at)


def interval_years(earlier: StudyRecord, later: StudyRecord) -> float | None:
    """Years of 365.25 days between the two (shifted) scan dates; None when either has none.
    Shifting moves every date of a subject by the same offset, so the interval is exact."""
    first, second = _scan_date(earlier), _scan_date(later)
    if first is None or second is None:
        return None
    return round((second - first).days / DAYS_PER_YEAR, 6)


def ran_tissue_seg(study: StudyRecord) -> bool:
    """Whether the study's latest COMPLETED attempt ran tissue-seg (its summary holds each analysis
    that ran)."""
    return study.status == StudyStatus.COMPLETED and PRIOR_NEEDS in (study.summary or {})


def prior_study(study: StudyRecord, store: StudyStore) -> StudyRecord | None:
    """The subject's newest earlier COMPLETED study that ran tissue-seg; None without a subject or
    without such a study."""
    subject_ref = subject_ref_of(study)
    if subject_ref is None:
        return None
    earlier = [
        other
        for other in store.studies_of_subject(study.tenant, subject_ref)  # oldest first
        if other.study_id != study.study_id and ran_tissue_seg(other) and is_earlier(other, study)
    ]
    return earlier[-1] if earlier else None


def pin_prior(prior: StudyRecord, study: StudyRecord) -> PriorPin:
    return PriorPin(
        study_id=prior.study_id, attempt=int(prior.attempt), interval_years=interval_years(prior, study)
    )
