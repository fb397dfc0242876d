"""Records as the API shows them."""

from __future__ import annotations

from voxelpipe.api.schemas import DeclaredFile, ModelView, StepView, StudyCost, StudyView
from voxelpipe.inference.registry import scope_of
from voxelpipe.inference.spec import ModelSpec, analysis_name
from voxelpipe.ports import StudyStore
from voxelpipe.records import ModelRecord, StudyRecord


def study_view(study: StudyRecord, store: StudyStore | None = None) -> StudyView:
    """The study; with `store`, its current attempt's steps too."""
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
