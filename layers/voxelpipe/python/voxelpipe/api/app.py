"""The voxelpipe query API (see docs/api.md); every route is tenant-scoped and role-checked."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Query, Request

import voxelpipe
from voxelpipe import queries, tracking, webhooks
from voxelpipe.adapters import secrets
from voxelpipe.adapters.storage import Storage
from voxelpipe.analyses import CATALOGUE, UnknownAnalysis
from voxelpipe.api import problems
from voxelpipe.api.auth import Action, Principal, principal
from voxelpipe.api.problems import Problem, not_found
from voxelpipe.api.schemas import (
    Artifact,
    CompleteModel,
    CreateModel,
    CreateStudy,
    ModelCreated,
    ModelPage,
    ModelView,
    PartTarget,
    StepView,
    StudyCost,
    StudyCreated,
    StudyPage,
    StudyResults,
    StudyView,
    UploadTarget,
)
from voxelpipe.inference import registry
from voxelpipe.inference.spec import analysis_name
from voxelpipe.keys import UploadKey, derived_key
from voxelpipe.pipeline import manage
from voxelpipe.pipeline.ingest_dicom import complete_dicom_study
from voxelpipe.pipeline.register import register_study
from voxelpipe.records import ModelRecord, StudyRecord
from voxelpipe.status import StudyStatus
from voxelpipe.validation import Limits
from voxelpipe.wiring import DEFAULT_MAX_UPLOAD_BYTES, EnvVar, GpuSettings

# Presigned URLs live this long; uploads above the threshold go multipart (S3's single PUT/POST
# tops out at 5 GB, and parts can be retried one by one).
URL_EXPIRY = timedelta(hours=1)
MULTIPART_THRESHOLD_ENV = "VOXELPIPE_MULTIPART_THRESHOLD_BYTES"
MULTIPART_PART_ENV = "VOXELPIPE_MULTIPART_PART_BYTES"
DEFAULT_MULTIPART_THRESHOLD = 100 * 1024**2
DEFAULT_PART_BYTES = 64 * 1024**2

Caller = Annotated[Principal, Depends(principal)]


def _source(request: Request) -> str:
    """Where the call came from, for the audit trail."""
    event = request.scope.get("aws.event") or {}
    ip = (event.get("requestContext") or {}).get("identity", {}).get("sourceIp")
    return str(ip or (request.client.host if request.client else "unknown"))


def _owned(caller: Principal, study_id: str) -> StudyRecord:
    study = queries.study_for_tenant(caller.tenant, study_id)
    if study is None:
        raise not_found()
    return study


def _view(study: StudyRecord, with_steps: bool = True) -> StudyView:
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
            for task in tracking.tasks_of(study.study_id, int(study.attempt))
        ]
        if with_steps
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
        steps=steps,
        cost=StudyCost.model_validate(study.cost) if study.cost else None,
    )


def _model_view(record: ModelRecord) -> ModelView:
    return ModelView(
        name=record.name,
        version=int(record.version),
        analysis=analysis_name(record.name),
        format=record.format,
        status=record.status,
        size=int(record.size),
        sha256=record.sha256,
        spec=record.spec,
        created_at=record.created_at,
        ready_at=record.ready_at,
        retired_at=record.retired_at,
    )


def _post_target(storage: Storage, key: str, filename: str, size: int, expires_at: datetime) -> UploadTarget:
    """A presigned form POST of `size` bytes to `key`."""
    post = storage.presign_post(key, size, int(URL_EXPIRY.total_seconds()))
    return UploadTarget(
        file=filename, key=key, method="post", url=post["url"], fields=post["fields"], expires_at=expires_at
    )


def _upload_target(storage: Storage, key: UploadKey, size: int, expires_at: datetime) -> UploadTarget:
    expires_s = int(URL_EXPIRY.total_seconds())
    threshold = int(os.environ.get(MULTIPART_THRESHOLD_ENV, DEFAULT_MULTIPART_THRESHOLD))
    if size <= threshold:
        return _post_target(storage, key.key, key.filename, size, expires_at)
    part_size = max(5 * 1024**2, int(os.environ.get(MULTIPART_PART_ENV, DEFAULT_PART_BYTES)))
    multipart = storage.presign_multipart(key.key, size, part_size, expires_s)
    return UploadTarget(
        file=key.filename,
        key=key.key,
        method="multipart",
        upload_id=multipart["upload_id"],
        part_size=multipart["part_size"],
        parts=[PartTarget(**part) for part in multipart["parts"]],
        complete_url=multipart["complete_url"],
        expires_at=expires_at,
    )


def create_app() -> FastAPI:
    app = FastAPI(
        title="voxelpipe",
        version=voxelpipe.__version__,
        description="Upload medical imaging volumes, follow their processing, fetch their results. "
        "Errors are RFC 9457 problem details (application/problem+json) with a stable `code`.",
        docs_url="/docs",
        openapi_url="/openapi.json",
    )
    problems.install(app)

    @app.get("/health", tags=["service"])
    def health() -> dict[str, str]:
        return {"status": "ok", "version": voxelpipe.__version__}

    @app.get("/analyses", tags=["analyses"])
    def analyses(caller: Caller) -> dict[str, list[dict[str, Any]]]:
        caller.require(Action.READ)
        on_gpu = GpuSettings.from_env(os.environ).gpu_analyses
        catalogue = [analysis.describe(on_gpu) for analysis in CATALOGUE.values()]
        models = [registry.describe_model_analysis(r) for r in registry.ready_models().values()]
        return {"items": catalogue + sorted(models, key=lambda item: item["name"])}

    @app.post("/models", status_code=201, response_model=ModelCreated, tags=["models"])
    def register_model(body: CreateModel, caller: Caller) -> ModelCreated:
        caller.require(Action.MANAGE_MODELS)
        record = registry.register_model(body.name, body.spec, body.size, body.sha256, actor=caller.subject)
        # Always one form POST: a model is at most 5 GB (MAX_MODEL_BYTES), S3's limit for one.
        upload = _post_target(
            Storage.from_environment(),
            record.object_key,
            record.object_key.rsplit("/", 1)[-1],
            body.size,
            datetime.now(UTC) + URL_EXPIRY,
        )
        return ModelCreated(model=_model_view(record), upload=upload)

    @app.post("/models/{name}/complete", response_model=ModelView, tags=["models"])
    def complete_model(name: str, caller: Caller, body: CompleteModel | None = None) -> ModelView:
        caller.require(Action.MANAGE_MODELS)
        try:
            record = registry.complete_model(
                name, Storage.from_environment(), body.version if body is not None else None
            )
        except registry.ModelNotFound as error:
            raise Problem(404, "model_not_found", "No such model", str(error)) from error
        except registry.ModelUploadMismatch as error:
            raise Problem(
                409, "model_upload_mismatch", "The model file is not as declared", str(error)
            ) from error
        except registry.ModelRetired as error:
            raise Problem(409, "model_retired", "The model version was retired", str(error)) from error
        return _model_view(record)

    @app.delete("/models/{name}", response_model=ModelPage, tags=["models"])
    def retire_model(
        name: str, caller: Caller, version: Annotated[int | None, Query(ge=1)] = None
    ) -> ModelPage:
        caller.require(Action.MANAGE_MODELS)
        try:
            records = registry.retire_model(name, Storage.from_environment(), version, actor=caller.subject)
        except registry.ModelNotFound as error:
            raise Problem(404, "model_not_found", "No such model", str(error)) from error
        return ModelPage(items=[_model_view(record) for record in records])

    @app.get("/models", response_model=ModelPage, tags=["models"])
    def list_models(caller: Caller) -> ModelPage:
        caller.require(Action.READ)
        return ModelPage(items=[_model_view(record) for record in registry.list_models()])

    @app.post("/studies", status_code=201, response_model=StudyCreated, tags=["studies"])
    def create_study(body: CreateStudy, caller: Caller, request: Request) -> StudyCreated:
        caller.require(Action.UPLOAD)
        limit = int(os.environ.get(EnvVar.MAX_UPLOAD_BYTES, DEFAULT_MAX_UPLOAD_BYTES))
        for index, declared in enumerate(body.files):
            if declared.size > limit:
                raise Problem(
                    422,
                    "validation_failed",
                    "The request is not valid",
                    f"check: files.{index}.size",
                    errors=[
                        {"field": f"files.{index}.size", "message": f"over the {limit}-byte upload limit"}
                    ],
                )
        try:
            study = register_study(
                caller.tenant,
                actor=caller.subject,
                source=_source(request),
                analyses=body.analyses,
                priority=body.priority,
                subject={"subject_ref": body.subject_ref, "age": body.age, "sex": body.sex}
                if body.subject_ref or body.age is not None or body.sex
                else None,
                manifest=[{"name": f.name, "size": f.size} for f in body.files],
                webhook_url=str(body.webhook_url) if body.webhook_url else None,
                input_format=body.format,
                parameters=body.parameters,
            )
        except UnknownAnalysis as error:
            raise Problem(
                422,
                "validation_failed",
                "The request is not valid",
                "check: analyses",
                errors=[{"field": "analyses", "message": str(error)}],
            ) from error
        except ValueError as error:  # parameters for analyses that were not requested
            raise Problem(
                422,
                "validation_failed",
                "The request is not valid",
                "check: parameters",
                errors=[{"field": "parameters", "message": str(error)}],
            ) from error
        storage = Storage.from_environment()
        expires_at = datetime.now(UTC) + URL_EXPIRY
        uploads = [
            _upload_target(storage, UploadKey(caller.tenant, study.study_id, f.name), f.size, expires_at)
            for f in body.files
        ]
        # The webhook's signing key is derived from the deployment's secret, so shown here once
        # and never stored (voxelpipe.webhooks).
        webhook_secret = (
            webhooks.study_key(secrets.webhook_secret(), study.study_id) if study.webhook_url else None
        )
        return StudyCreated(
            study_id=study.study_id, status=study.status, uploads=uploads, webhook_secret=webhook_secret
        )

    @app.post("/studies/{study_id}/complete", status_code=202, response_model=StudyView, tags=["studies"])
    def complete(study_id: str, caller: Caller, request: Request) -> StudyView:
        caller.require(Action.UPLOAD)
        study = _owned(caller, study_id)
        tracking.audit(study_id, "complete_requested", actor=caller.subject, source=_source(request))
        if study.status == StudyStatus.AWAITING_UPLOAD and study.input_format == "dicom" and study.arrived:
            # The uploader says the series is whole: check it with what arrived.
            limits = Limits(
                max_upload_bytes=int(os.environ.get(EnvVar.MAX_UPLOAD_BYTES, DEFAULT_MAX_UPLOAD_BYTES))
            )
            complete_dicom_study(study_id, Storage.from_environment(), limits, source=_source(request))
            study = _owned(caller, study_id)
        elif study.status == StudyStatus.AWAITING_UPLOAD:
            storage = Storage.from_environment()
            present = set(storage.list_keys(UploadKey(caller.tenant, study_id, "").key))
            missing = [
                f["name"]
                for f in study.manifest or []
                if UploadKey(caller.tenant, study_id, f["name"]).key not in present
            ]
            raise Problem(
                409,
                "upload_incomplete",
                "Not every declared file has arrived",
                f"missing: {', '.join(missing) or 'none (validation has not started yet)'}",
                missing=missing,
            )
        # A NIfTI study completes with its one upload; this reports where it stands.
        return _view(study)

    @app.get("/studies", response_model=StudyPage, tags=["studies"])
    def list_studies(
        caller: Caller,
        status: Annotated[StudyStatus | None, Query(description="only studies in this status")] = None,
        since: Annotated[datetime | None, Query(description="created at or after (ISO 8601)")] = None,
        until: Annotated[datetime | None, Query(description="created at or before (ISO 8601)")] = None,
        limit: Annotated[int, Query(ge=1, le=200)] = 50,
        cursor: Annotated[str | None, Query(description="next_cursor of the previous page")] = None,
    ) -> StudyPage:
        caller.require(Action.READ)
        try:
            records, next_cursor = queries.list_studies(
                caller.tenant, status=status, since=since, until=until, limit=limit, cursor=cursor
            )
        except queries.InvalidCursor as error:
            raise Problem(
                422,
                "validation_failed",
                "The request is not valid",
                "check: cursor",
                errors=[{"field": "cursor", "message": str(error)}],
            ) from error
        return StudyPage(items=[_view(r, with_steps=False) for r in records], next_cursor=next_cursor)

    @app.get("/studies/{study_id}", response_model=StudyView, tags=["studies"])
    def get_study(study_id: str, caller: Caller) -> StudyView:
        caller.require(Action.READ)
        return _view(_owned(caller, study_id))

    @app.get("/studies/{study_id}/results", response_model=StudyResults, tags=["studies"])
    def results(study_id: str, caller: Caller) -> StudyResults:
        caller.require(Action.READ)
        study = _owned(caller, study_id)
        if study.status != StudyStatus.COMPLETED or study.results_key is None:
            raise Problem(
                409,
                "not_completed",
                "The study has no results",
                f"it is {study.status}",
                status_now=study.status,
            )
        storage = Storage.from_environment()
        document = json.loads(storage.read(study.results_key))
        prefix = derived_key(study_id) + "/"
        expires_s = int(URL_EXPIRY.total_seconds())
        artifacts = [
            Artifact(path=key.removeprefix(prefix), url=storage.presign_get(key, expires_s))
            for key in storage.list_keys(prefix)
        ]
        return StudyResults(
            study_id=study_id,
            attempt=int(study.attempt),
            results=document,
            artifacts=artifacts,
            expires_at=datetime.now(UTC) + URL_EXPIRY,
        )

    @app.post("/studies/{study_id}/reprocess", status_code=202, response_model=StudyView, tags=["studies"])
    def reprocess(study_id: str, caller: Caller, request: Request) -> StudyView:
        caller.require(Action.UPLOAD)
        study = _owned(caller, study_id)
        try:
            reopened = manage.reprocess(study, actor=caller.subject, source=_source(request))
        except tracking.TransitionRefused as error:
            raise Problem(
                409,
                "not_reprocessable",
                "Only a COMPLETED or FAILED study can be reprocessed",
                f"it is {study.status}"
                + ("; upload a corrected file as a new study" if study.reason else ""),
            ) from error
        return _view(reopened, with_steps=False)

    @app.delete("/studies/{study_id}", tags=["studies"])
    def delete_study(study_id: str, caller: Caller, request: Request) -> dict[str, Any]:
        caller.require(Action.DELETE)
        study = _owned(caller, study_id)
        removed = manage.delete(
            study, Storage.from_environment(), actor=caller.subject, source=_source(request)
        )
        return {"study_id": study_id, "status": StudyStatus.DELETED.value, "objects_removed": removed}

    return app
