"""A tenant's measures across its studies (GET /measures, `voxelpipe export`): rows, page by page.

The studies are read from the tenant-created index one page at a time, and each page becomes its
rows before the next is read: an export of any size holds one page of studies and their rows, never
the cohort. Each study gives one row per measure of each analysis in its summary (the headline
measures Finalize copies from results.json), flattened by `voxelpipe.measure_rows`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, NamedTuple

from voxelpipe.measure_rows import measure_rows
from voxelpipe.ports import StudyStore
from voxelpipe.records import StudyRecord
from voxelpipe.status import StudyStatus

# Studies read from the index per page (DynamoDB's Limit: before the status filter, so a page may
# hold fewer); the rows of one page are one Parquet row group.
PAGE_STUDIES = 100


class MeasureRow(NamedTuple):
    """One measure of one analysis of one study, with what a cohort is grouped by."""

    study_id: str
    subject_ref: str | None
    scan_date: str | None  # ISO date, shifted (docs/subjects.md); None when unknown
    age: float | None
    sex: str | None
    status: str
    attempt: int
    completed_at: str | None  # ISO 8601, UTC; None unless COMPLETED
    analysis: str
    analysis_version: str | None  # None for studies finalized before versions were kept
    measure: str
    value: float
    unit: str


COLUMNS: tuple[str, ...] = MeasureRow._fields


@dataclass(frozen=True)
class MeasureFilter:
    """Which studies and analyses an export covers (every field optional but `status`)."""

    status: StudyStatus = StudyStatus.COMPLETED
    subject_ref: str | None = None
    scan_from: date | None = None  # on the study's scan date; studies without one are left out
    scan_to: date | None = None
    since: datetime | None = None  # on the study's creation time
    until: datetime | None = None
    analyses: frozenset[str] = frozenset()  # empty: every analysis

    def covers(self, study: StudyRecord) -> bool:
        """The filters DynamoDB's query does not apply (subject, scan date)."""
        if self.subject_ref is not None and _subject(study).get("subject_ref") != self.subject_ref:
            return False
        if self.scan_from is not None or self.scan_to is not None:
            scanned = _scan_date(study)
            if scanned is None:
                return False
            try:
                day = date.fromisoformat(scanned)
            except ValueError:
                return False
            if (self.scan_from and day < self.scan_from) or (self.scan_to and day > self.scan_to):
                return False
        return True


def _subject(study: StudyRecord) -> dict[str, Any]:
    subject = study.subject
    return subject if isinstance(subject, dict) else {}


def _scan_date(study: StudyRecord) -> str | None:
    # `scan_date` is the subjects' field (issue 18, docs/subjects.md): null-safe for studies, and
    # for records, that have none.
    value = getattr(study, "scan_date", None)
    return str(value) if value else None


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def study_rows(study: StudyRecord, analyses: frozenset[str] = frozenset()) -> Iterator[MeasureRow]:
    """The rows of one study: each analysis of its summary (those named, when any are), in order."""
    subject = _subject(study)
    versions = study.analysis_versions if isinstance(study.analysis_versions, dict) else {}
    completed = (
        study.updated_at.isoformat()
        if study.status == StudyStatus.COMPLETED.value and study.updated_at
        else None
    )
    ref = subject.get("subject_ref")
    sex = subject.get("sex")
    for analysis, measures in (study.summary or {}).items():
        if analysis_filtered_out(analysis, analyses):
            continue
        version = versions.get(analysis)
        for measure, value, unit in measure_rows(measures):
            yield MeasureRow(
                study_id=study.study_id,
                subject_ref=str(ref) if ref is not None else None,
                scan_date=_scan_date(study),
                age=_number(subject.get("age")),
                sex=str(sex) if sex is not None else None,
                status=study.status,
                attempt=int(study.attempt),
                completed_at=completed,
                analysis=analysis,
                analysis_version=str(version) if version is not None else None,
                measure=measure,
                value=value,
                unit=unit,
            )


def analysis_filtered_out(analysis: str, analyses: frozenset[str]) -> bool:
    return bool(analyses) and analysis not in analyses


def measure_pages(
    store: StudyStore, tenant: str, filters: MeasureFilter, page_studies: int = PAGE_STUDIES
) -> Iterator[list[MeasureRow]]:
    """The tenant's rows, one list per page of studies read (newest study first); a page whose
    studies give no row gives no list."""
    start_key: dict[str, Any] | None = None
    while True:
        page = store.tenant_studies(
            tenant,
            status=filters.status,
            since=filters.since,
            until=filters.until,
            limit=page_studies,
            start_key=start_key,
        )
        rows = [
            row
            for study in page.items
            if study.tenant == tenant and filters.covers(study)
            for row in study_rows(study, filters.analyses)
        ]
        if rows:
            yield rows
        if not page.next_key:
            return
        start_key = page.next_key
