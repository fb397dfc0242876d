"""A subject's timeline from the studies table (voxelpipe.timeline builds the document): for
`GET /subjects/{ref}/timeline`, `voxelpipe timeline` and Finalize's report."""

from __future__ import annotations

from typing import Any

from voxelpipe.ageing_rates import RatesTable
from voxelpipe.messages import ReferencePin
from voxelpipe.pipeline.prior_pin import is_earlier, subject_ref_of
from voxelpipe.ports import ObjectStorage, StudyStore
from voxelpipe.records import StudyRecord
from voxelpipe.reference_kinds import ReferenceKind
from voxelpipe.references import ReferenceNotFound, load_reference, ready_reference
from voxelpipe.status import StudyStatus
from voxelpipe.timeline import TimelineStudy, build_timeline


def timeline_study(
    study: StudyRecord, summary: dict[str, Any] | None = None, status: str | None = None
) -> TimelineStudy:
    """The timeline's view of a study; `summary` and `status` replace the record's (Finalize's
    study, whose measures are not on its record yet)."""
    subject = study.subject or {}
    age = subject.get("age")
    return TimelineStudy(
        study_id=study.study_id,
        status=status or str(study.status),
        created_at=study.created_at,
        scan_date=study.scan_date,
        age=float(age) if isinstance(age, int | float) and not isinstance(age, bool) else None,
        summary=summary if summary is not None else dict(study.summary or {}),
    )


def load_rates(tenant: str, name: str, version: int | None, storage: ObjectStorage) -> RatesTable:
    """The READY rates table `name` (its newest version, or `version`) the tenant sees;
    ReferenceNotFound when there is none, ReferenceUnavailable when its files are gone."""
    record = ready_reference(ReferenceKind.RATES, tenant, name, version)
    if record is None:
        which = name if version is None else f"{name} version {version}"
        raise ReferenceNotFound(f"no rates table {which} is registered and READY")
    pin = ReferencePin(
        kind=ReferenceKind.RATES.value, name=name, owner=record.owner, version=int(record.version)
    )
    table = load_reference(pin, storage)
    assert isinstance(table, RatesTable)
    return table


def subject_timeline(
    store: StudyStore, tenant: str, subject_ref: str, rates: RatesTable | None = None
) -> dict[str, Any] | None:
    """The subject's timeline (its studies of `tenant`, oldest first); None when it has none."""
    studies = store.studies_of_subject(tenant, subject_ref)
    if not studies:
        return None
    return build_timeline(subject_ref, [timeline_study(s) for s in studies], rates)


def report_timeline(study: StudyRecord, summary: dict[str, Any], store: StudyStore) -> dict[str, Any] | None:
    """For Finalize's report: the timeline of the study's subject up to this study (its earlier
    COMPLETED studies and this one, with the measures it is completing with); None without a
    subject or an earlier COMPLETED study."""
    subject_ref = subject_ref_of(study)
    if subject_ref is None:
        return None
    earlier = [
        other
        for other in store.studies_of_subject(study.tenant, subject_ref)
        if other.study_id != study.study_id
        and other.status == StudyStatus.COMPLETED
        and is_earlier(other, study)
    ]
    if not earlier:
        return None
    this = timeline_study(study, summary, StudyStatus.COMPLETED.value)
    return build_timeline(subject_ref, [*(timeline_study(s) for s in earlier), this])
