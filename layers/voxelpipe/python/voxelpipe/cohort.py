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
from typing import Any

from voxelpipe.measure_rows import COLUMNS, MeasureRow, measure_rows
from voxelpipe.ports import StudyStore
from voxelpipe.records import StudyRecord
from voxelpipe.status import StudyStatus

__all__ = ["COLUMNS", "PAGE_STUDIES", "MeasureFilter", "MeasureRow", "measure_pages", "study_rows"]

# Studies read from the index per page (DynamoDB's Limit: before the status filter, so a page may
# hold fewer); the rows of one page are one Parquet row group.
PAGE_STUDIES = 100
# What a study's rows are made of: records are read with these attributes alone (not the upload's
# manifest, the exam's series, the cost, the report...).
ROW_ATTRIBUTES = (
    "study_id",
    "tenant",
    "status",
    "attempt",
    "updated_at",
    "subject",
    "scan_date",
    "summary",
    "analysis_versions",
)


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
    return str(study.scan_date) if study.scan_date else None


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def study_rows(study: StudyRecord, analyses: frozenset[str] = frozenset()) -> Iterator[MeasureRow]:
    """The rows of one study: each analysis of its summary (those named, when any are), in order."""
    subject = _subject(study)
    versions = study.analysis_versions if isinstance(study.analysis_versions, dict) else {}
    ref, sex = subject.get("subject_ref"), subject.get("sex")
    # What every row of the study repeats: the columns before `analysis`.
    completed = (
        study.updated_at.isoformat()
        if study.status == StudyStatus.COMPLETED.value and study.updated_at
        else None
    )
    head: tuple[str, str | None, str | None, float | None, str | None, str, int, str | None] = (
        study.study_id,
        str(ref) if ref is not None else None,
        _scan_date(study),
        _number(subject.get("age")),
        str(sex) if sex is not None else None,
        study.status,
        int(study.attempt),
        completed,
    )
    for analysis, measures in (study.summary or {}).items():
        if analyses and analysis not in analyses:
            continue
        version = versions.get(analysis)
        for measure, value, unit in measure_rows(measures):
            yield MeasureRow(
                *head,
                analysis=analysis,
                analysis_version=str(version) if version is not None else None,
                measure=measure,
                value=value,
                unit=unit,
            )


def measure_pages(
    store: StudyStore, tenant: str, filters: MeasureFilter, page_studies: int = PAGE_STUDIES
) -> Iterator[list[MeasureRow]]:
    """The tenant's rows, one list per page of studies read (newest study first); a page whose
    studies give no row gives no list. One subject's are read through the subject index."""
    if filters.subject_ref is not None:
        studies = [
            study
            for study in reversed(store.studies_of_subject(tenant, filters.subject_ref))
            if study.status == filters.status
            and (filters.since is None or study.created_at >= filters.since)
            and (filters.until is None or study.created_at <= filters.until)
            and filters.covers(study)
        ]
        for first in range(0, len(studies), page_studies):
            rows = [
                row
                for study in studies[first : first + page_studies]
                for row in study_rows(study, filters.analyses)
            ]
            if rows:
                yield rows
        return
    start_key: dict[str, Any] | None = None
    while True:
        page = store.tenant_studies(
            tenant,
            status=filters.status,
            since=filters.since,
            until=filters.until,
            limit=page_studies,
            start_key=start_key,
            attributes=ROW_ATTRIBUTES,
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
