"""Studies: register and upload, complete, follow, fetch results, reprocess, delete."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from voxelpipe import queries, tracking, webhooks
from voxelpipe.adapters import secrets
from voxelpipe.api.audit import note
from voxelpipe.api.auth import Action
from voxelpipe.api.dependencies import (
    Bucket,
    Caller,
    Exam,
    Identities,
    Queues,
    Quotas,
    StateMachine,
    Store,
    owned_study,
    quota_problem,
    request_source,
    requires,
)
from voxelpipe.api.problems import Problem, invalid_request, not_found
from voxelpipe.api.schemas import (
    Artifact,
    AttemptList,
    AttemptView,
    CreateStudy,
    ReprocessStudy,
    StudyCreated,
    StudyPage,
    StudyResults,
    StudyView,
)
from voxelpipe.api.uploads import URL_EXPIRY, expiry, upload_target
from voxelpipe.api.views import study_view
from voxelpipe.keys import UploadKey, derived_key
from voxelpipe.limits import Limits
from voxelpipe.pipeline import manage
from voxelpipe.pipeline.attempts import attempt_prefix, attempt_record, ended_attempts, is_archived
from voxelpipe.pipeline.register import RegistrationRefused, register_study
from voxelpipe.quotas import QuotaExceeded, declared_bytes
from voxelpipe.records import StudyRecord
from voxelpipe.status import StudyStatus

router = APIRouter(prefix="/studies", tags=["studies"])


@router.post(
    "", status_code=201, response_model=StudyCreated, **requires(Action.UPLOAD, audit="study.create")
)
def create_study(
    body: CreateStudy, caller: Caller, request: Request, store: Store, bucket: Bucket, quotas: Quotas
) -> StudyCreated:
    now = datetime.now(UTC)
    subject = (
        {"subject_ref": body.subject_ref, "age": body.age, "sex": body.sex}
        if body.subject_ref or body.age is not None or body.sex
        else None
    )
    try:
        study = register_study(
            store,
            caller.tenant,
            actor=caller.subject,
            source=request_source(request),
            analyses=body.analyses,
            priority=body.priority,
            subject=subject,
            files=[(f.name, f.size) for f in body.files],
            webhook_url=str(body.webhook_url) if body.webhook_url else None,
            input_format=body.format,
            parameters=body.parameters,
            limits=Limits.from_environment(),
            destinations=body.destinations,
            scan_date=body.scan_date,
            # Only a scan date needs the secret: a registration without one never reads it.
            pseudonyms=secrets.pseudonyms() if body.scan_date is not None else None,
            # Once the request is valid: the tenant's quotas (studies in flight, today's studies,
            # stored bytes), taken atomically; a 429 stores and counts nothing.
            admit=lambda: quotas.take_study(caller.tenant, sum(f.size for f in body.files), now),
        )
    except RegistrationRefused as refused:
        raise invalid_request(refused.field, str(refused)) from refused
    except QuotaExceeded as exceeded:
        raise quota_problem(exceeded, now) from exceeded
    note(request, study_id=study.study_id)
    expires_at = expiry()
    # Each file goes to the object name the server chose for it (the manifest maps the two).
    uploads = [
        upload_target(
            bucket,
            UploadKey(caller.tenant, study.study_id, entry["object"]).key,
            entry["name"],
            entry["size"],
            expires_at,
        )
        for entry in study.manifest or []
    ]
    # The webhook's signing key is derived from the deployment's secret, so shown here once and
    # never stored (voxelpipe.webhooks).
    webhook_secret = (
        webhooks.study_key(secrets.webhook_secret(), study.study_id) if study.webhook_url else None
    )
    return StudyCreated(
        study_id=study.study_id, status=study.status, uploads=uploads, webhook_secret=webhook_secret
    )


@router.post(
    "/{study_id}/complete",
    status_code=202,
    response_model=StudyView,
    **requires(Action.UPLOAD, 404, 409, audit="study.complete"),
)
def complete(study_id: str, caller: Caller, request: Request, store: Store, exam: Exam) -> StudyView:
    study = owned_study(store, caller, study_id)
    try:
        study = manage.complete_upload(study, exam, actor=caller.subject, source=request_source(request))
    except manage.UploadIncomplete as incomplete:
        raise Problem(
            409,
            "upload_incomplete",
            "Not every declared file has arrived",
            str(incomplete),
            missing=incomplete.missing,
        ) from incomplete
    return study_view(study, store)


@router.get("", response_model=StudyPage, **requires(Action.READ, 400, audit="study.list"))
def list_studies(
    caller: Caller,
    store: Store,
    status: Annotated[StudyStatus | None, Query(description="only studies in this status")] = None,
    since: Annotated[datetime | None, Query(description="created at or after (ISO 8601)")] = None,
    until: Annotated[datetime | None, Query(description="created at or before (ISO 8601)")] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(description="next_cursor of the previous page")] = None,
) -> StudyPage:
    try:
        records, next_cursor = queries.list_studies(
            store,
            caller.tenant,
            cursor_signing_key=queries.cursor_key(secrets.webhook_secret()),
            status=status,
            since=since,
            until=until,
            limit=limit,
            cursor=cursor,
        )
    except queries.InvalidCursor as error:
        raise Problem(400, "invalid_cursor", "The cursor is not valid", str(error)) from error
    return StudyPage(items=[study_view(r) for r in records], next_cursor=next_cursor)


@router.get("/{study_id}", response_model=StudyView, **requires(Action.READ, 404, audit="study.read"))
def get_study(study_id: str, caller: Caller, store: Store, bucket: Bucket) -> StudyView:
    return study_view(owned_study(store, caller, study_id), store, bucket)


AttemptNumber = Annotated[
    int | None, Query(ge=1, description="an earlier attempt (GET /studies/{id}/attempts); default the latest")
]


def _attempt_not_found(study: StudyRecord, attempt: int) -> Problem:
    return Problem(
        404,
        "attempt_not_found",
        "The study has no such attempt",
        f"attempt {attempt}; the study's attempts are 1 to {study.attempt}",
    )


@router.get(
    "/{study_id}/attempts", response_model=AttemptList, **requires(Action.READ, 404, audit="study.attempts")
)
def attempts(study_id: str, caller: Caller, store: Store) -> AttemptList:
    """Every attempt of the study, latest first."""
    study = owned_study(store, caller, study_id)
    records = [*ended_attempts(store, study_id), attempt_record(study, store)]
    items = [AttemptView(**record, latest=record is records[-1]) for record in reversed(records)]
    return AttemptList(study_id=study_id, items=items)


@router.get(
    "/{study_id}/results",
    response_model=StudyResults,
    **requires(Action.READ, 404, 409, audit="study.results"),
)
def results(
    study_id: str,
    caller: Caller,
    request: Request,
    store: Store,
    bucket: Bucket,
    attempt: AttemptNumber = None,
) -> StudyResults:
    study = owned_study(store, caller, study_id)
    if attempt is None or attempt == int(study.attempt):
        if study.status != StudyStatus.COMPLETED or study.results_key is None:
            raise Problem(
                409,
                "not_completed",
                "The study has no results",
                f"it is {study.status}",
                status_now=study.status,
            )
        results_key, number = study.results_key, int(study.attempt)
        prefix = derived_key(study_id) + "/"
    else:
        earlier = {int(record["attempt"]): record for record in ended_attempts(store, study_id)}
        if attempt not in earlier:
            raise _attempt_not_found(study, attempt)
        if earlier[attempt]["status"] != StudyStatus.COMPLETED or not earlier[attempt]["results_key"]:
            raise Problem(
                409,
                "not_completed",
                "The attempt has no results",
                f"attempt {attempt} ended {earlier[attempt]['status']}",
                status_now=earlier[attempt]["status"],
            )
        results_key, number = earlier[attempt]["results_key"], attempt
        prefix = attempt_prefix(study_id, attempt)
    document = json.loads(bucket.read(results_key))
    expires_s = int(URL_EXPIRY.total_seconds())
    top = derived_key(study_id) + "/"
    # The attempt's own objects (an earlier one's under attempts/{n}/), and the study's inputs
    # (input/) that every attempt reads: never another attempt's.
    listed = [key for key in bucket.list_keys(top) if not is_archived(key, study_id)]
    if prefix != top:
        listed = bucket.list_keys(prefix) + [key for key in listed if key.startswith(top + "input/")]
    artifacts = [
        Artifact(
            path=key.removeprefix(prefix) if key.startswith(prefix) else key.removeprefix(top),
            url=bucket.presign_get(key, expires_s),
        )
        for key in listed
    ]
    note(request, attempt=number, download_links=len(artifacts))  # each link is an access
    return StudyResults(
        study_id=study_id, attempt=number, results=document, artifacts=artifacts, expires_at=expiry()
    )


@router.post(
    "/{study_id}/reprocess",
    status_code=202,
    response_model=StudyView,
    **requires(Action.UPLOAD, 404, 409, audit="study.reprocess"),
)
def reprocess(
    study_id: str,
    caller: Caller,
    request: Request,
    store: Store,
    bucket: Bucket,
    queues: Queues,
    body: ReprocessStudy | None = None,
) -> StudyView:
    study = owned_study(store, caller, study_id)
    asked = body or ReprocessStudy()
    try:
        reopened = manage.reprocess(
            study,
            store,
            bucket,
            queues,
            actor=caller.subject,
            source=request_source(request),
            request=manage.ReprocessRequest(
                analyses=asked.analyses, parameters=asked.parameters, priority=asked.priority
            ),
        )
    except RegistrationRefused as refused:
        raise invalid_request(refused.field, str(refused)) from refused
    except tracking.TransitionRefused as error:
        current = error.current or study
        raise Problem(
            409,
            "not_reprocessable",
            "Only a COMPLETED or FAILED study can be reprocessed",
            f"it is {current.status} at attempt {current.attempt}"
            + ("; upload a corrected file as a new study" if current.reason else ""),
        ) from error
    return study_view(reopened)


@router.delete("/{study_id}", **requires(Action.DELETE, 404, audit="study.delete"))
def delete_study(
    study_id: str,
    caller: Caller,
    request: Request,
    store: Store,
    bucket: Bucket,
    machine: StateMachine,
    identities: Identities,
    quotas: Quotas,
) -> dict[str, Any]:
    study = owned_study(store, caller, study_id)
    stored = declared_bytes(study.manifest)
    try:
        removed = manage.delete(
            study, store, bucket, machine, identities, actor=caller.subject, source=request_source(request)
        )
    except tracking.TransitionRefused as error:  # deleted meanwhile by another call
        raise not_found() from error
    quotas.release_bytes(caller.tenant, stored)  # its declared bytes are free again
    return {"study_id": study_id, "status": StudyStatus.DELETED.value, "objects_removed": removed}
