"""Records as the API shows them."""

from __future__ import annotations

from datetime import date
from typing import Any, Protocol

from voxelpipe.api.schemas import (
    DeclaredFile,
    ExamSeriesView,
    ModelView,
    ReferenceFileView,
    ReferenceView,
    ReportFile,
    StepView,
    StudyCost,
    StudyReport,
    StudyView,
    SubjectDetail,
    SubjectStudy,
    SubjectView,
)
from voxelpipe.api.uploads import URL_EXPIRY, expiry
from voxelpipe.inference.registry import scope_of
from voxelpipe.inference.spec import ModelSpec, analysis_name
from voxelpipe.ports import StudyStore
from voxelpipe.records import ModelRecord, ReferenceRecord, StudyRecord, SubjectRecord
from voxelpipe.reference_kinds import ReferenceKind, ReferenceMetadata
from voxelpipe.references import record_files
from voxelpipe.references import scope_of as reference_scope


class Presigner(Protocol):
    def presign_get(self, key: str, expires_s: int) -> str: ...


def report_view(report: dict[str, Any], bucket: Presigner) -> StudyReport:
    """The report's files, each with a presigned link when it is available."""
    expires_s = int(URL_EXPIRY.total_seconds())

    def file(entry: Any) -> ReportFile:
        if isinstance(entry, dict) and entry.get("status") == "available" and entry.get("key"):
            return ReportFile(status="available", url=bucket.presign_get(entry["key"], expires_s))
        error = entry.get("error") if isinstance(entry, dict) else None
        return ReportFile(status="unavailable", error=error or "no report was made")

    return StudyReport(html=file(report.get("html")), pdf=file(report.get("pdf")), expires_at=expiry())


def study_view(
    study: StudyRecord, store: StudyStore | None = None, bucket: Presigner | None = None
) -> StudyView:
    """The study; with `store`, its current attempt's steps too; with `bucket`, links to its report."""
    steps = (
        [
            StepView(
                step=task.step,
                status=task.status,
                progress=int(task.progress),
                started_at=task.started_at,
                finished_at=task.finished_at,
                duration_ms=task.duration_ms,
                error=task.error,
            )
            for task in store.tasks_of(study.study_id, int(study.attempt))
        ]
        if store is not None
        else []
    )
    return StudyView(
        study_id=study.study_id,
        format=study.input_format,
        status=study.status,
        attempt=int(study.attempt),
        analyses=list(study.analyses),
        priority=study.priority,
        created_at=study.created_at,
        updated_at=study.updated_at,
        reason=study.reason,
        reason_detail=study.reason_detail,
        error=study.error,
        subject=study.subject,
        input=study.input,
        files=[DeclaredFile.model_validate(entry) for entry in study.manifest or []],
        steps=steps,
        cost=StudyCost.model_validate(study.cost) if study.cost else None,
        report=(
            report_view(study.report, bucket)
            if bucket is not None and study.report and study.status == "COMPLETED"
            else None
        ),
        source=study.source,
        exam_id=study.exam_id,
        series=[ExamSeriesView.model_validate(entry) for entry in (study.dicom or {}).get("series", [])],
        rule_set_version=((study.dicom or {}).get("rule_set") or {}).get("version"),
        scan_date=_date(study.scan_date),
    )


def _date(value: str | None) -> date | None:
    return date.fromisoformat(value) if value else None


def subject_view(subject: SubjectRecord) -> SubjectView:
    return SubjectView(
        subject_ref=subject.subject_ref,
        sex=subject.sex,
        age=subject.age,
        study_count=int(subject.studies),
        first_scan_date=_date(subject.first_scan_date),
        last_scan_date=_date(subject.last_scan_date),
        created_at=subject.created_at,
        updated_at=subject.updated_at,
    )


def subject_detail(subject: SubjectRecord, studies: list[StudyRecord]) -> SubjectDetail:
    """The subject and its studies (as `StudyStore.studies_of_subject` orders them: oldest first)."""
    return SubjectDetail(
        **subject_view(subject).model_dump(),
        studies=[
            SubjectStudy(
                study_id=study.study_id,
                status=study.status,
                scan_date=_date(study.scan_date),
                age=(study.subject or {}).get("age"),
                analyses=list(study.analyses),
                created_at=study.created_at,
            )
            for study in studies
        ],
    )


def model_view(record: ModelRecord) -> ModelView:
    # The spec as this code reads it: a record stored before a field existed shows its default.
    spec = ModelSpec.model_validate(record.spec)
    return ModelView(
        name=record.name,
        version=int(record.version),
        scope=scope_of(record.owner),
        analysis=analysis_name(record.name),
        format=record.format,
        kind=spec.kind,
        runtime=spec.runtime.value,
        status=record.status,
        size=int(record.size),
        sha256=record.sha256,
        spec=spec.model_dump(mode="json"),
        created_at=record.created_at,
        ready_at=record.ready_at,
        retired_at=record.retired_at,
    )


def reference_view(record: ReferenceRecord) -> ReferenceView:
    metadata = ReferenceMetadata.model_validate(record.metadata)
    return ReferenceView(
        kind=ReferenceKind(record.kind),
        name=record.name,
        version=int(record.version),
        scope=reference_scope(record.owner),
        status=record.status,
        licence=metadata.licence,
        citation=metadata.citation,
        commercial_use=metadata.commercial_use,
        space=metadata.space,
        description=metadata.description,
        files={
            role: ReferenceFileView(size=entry.size, sha256=entry.sha256)
            for role, entry in record_files(record).items()
        },
        summary=record.summary,
        created_at=record.created_at,
        ready_at=record.ready_at,
        retired_at=record.retired_at,
    )
