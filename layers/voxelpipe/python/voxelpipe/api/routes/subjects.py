"""Subjects (docs/subjects.md): a tenant's pseudonymous subjects, one subject with its studies, and
its timeline.

One router under `/subjects`. Reads, as study reads are: any role of the tenant. The timeline
(`GET /subjects/{ref}/timeline`) gathers the subject's studies oldest first with their headline
measures, the paired change between consecutive studies, first to last, and, with `rates=NAME` (a
registered healthy-ageing rates table, docs/reference-data.md), the rates' z-scores. A subject of
which the tenant has no study is a 404, as another tenant's is.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, Field

from voxelpipe import queries
from voxelpipe.adapters import secrets
from voxelpipe.ageing_rates import RatesTable
from voxelpipe.api.auth import Action
from voxelpipe.api.dependencies import Bucket, Caller, Store, requires
from voxelpipe.api.problems import Problem, invalid_request, not_found
from voxelpipe.api.schemas import SUBJECT_REF_PATTERN, SubjectDetail, SubjectPage
from voxelpipe.api.views import subject_detail, subject_view
from voxelpipe.pipeline.subject_timeline import load_rates, subject_timeline
from voxelpipe.references import NAME_PATTERN, ReferenceNotFound, ReferenceUnavailable

router = APIRouter(prefix="/subjects", tags=["subjects"])

SubjectRef = Annotated[str, Path(pattern=SUBJECT_REF_PATTERN, description="a pseudonymous subject reference")]


@router.get("", response_model=SubjectPage, **requires(Action.READ, 400, audit="subject.list"))
def list_subjects(
    caller: Caller,
    store: Store,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(description="next_cursor of the previous page")] = None,
) -> SubjectPage:
    """The tenant's subjects by subject_ref, each with its study count and first and last scan date."""
    try:
        records, next_cursor = queries.list_subjects(
            store,
            caller.tenant,
            cursor_signing_key=queries.cursor_key(secrets.webhook_secret()),
            limit=limit,
            cursor=cursor,
        )
    except queries.InvalidCursor as error:
        raise Problem(400, "invalid_cursor", "The cursor is not valid", str(error)) from error
    return SubjectPage(items=[subject_view(r) for r in records], next_cursor=next_cursor)


@router.get(
    "/{subject_ref}", response_model=SubjectDetail, **requires(Action.READ, 404, audit="subject.read")
)
def get_subject(subject_ref: SubjectRef, caller: Caller, store: Store) -> SubjectDetail:
    """The subject and its studies, oldest first; 404 for a subject the tenant does not have."""
    subject = store.get_subject(caller.tenant, subject_ref)
    if subject is None:
        raise not_found("subject")
    return subject_detail(subject, store.studies_of_subject(caller.tenant, subject_ref))


class TimelineStudy(BaseModel):
    study_id: str
    status: str
    scan_date: str | None = Field(description="ISO date, shifted by the subject's secret offset")
    created_at: str
    years_since_first: float | None = Field(description="from the first dated study's scan date")
    age: float | None
    measures: dict[str, Any] = Field(
        description="headline measures: volumetrics, regions_ml (regional), normative_z (normative)"
    )
    change_from_prior: dict[str, Any] | None = Field(
        description="the longitudinal measures against the prior study, per region, with rate_z "
        "when a rates table was named; None when the study ran no longitudinal"
    )


class Timeline(BaseModel):
    subject_ref: str
    studies: list[TimelineStudy] = Field(description="oldest first")
    first_to_last: dict[str, Any] | None = Field(
        description="chained consecutive paired changes from the first to the last compared study"
    )
    rates_reference: dict[str, Any] | None = Field(
        description="the rates table the z-scores are against: name, version, licence, citation"
    )


@router.get(
    "/{subject_ref}/timeline",
    response_model=Timeline,
    **requires(Action.READ, 404, 409, audit="subject.timeline"),
)
def timeline(
    subject_ref: SubjectRef,
    caller: Caller,
    store: Store,
    bucket: Bucket,
    rates: Annotated[
        str | None, Query(pattern=NAME_PATTERN, description="a registered rates table's name")
    ] = None,
    rates_version: Annotated[
        int | None, Query(ge=1, description="its version (default: newest READY)")
    ] = None,
) -> Timeline:
    if rates_version is not None and rates is None:
        raise invalid_request("rates_version", "a version without a name: give rates too")
    table: RatesTable | None = None
    if rates is not None:
        try:
            table = load_rates(caller.tenant, rates, rates_version, bucket)
        except ReferenceNotFound as error:
            raise invalid_request("rates", f"{error} (see GET /references/rates)") from error
        except ReferenceUnavailable as error:
            raise Problem(
                409, "reference_unavailable", "The rates table cannot be read", str(error)
            ) from error
    document = subject_timeline(store, caller.tenant, subject_ref, table)
    if document is None:
        raise not_found("subject")
    return Timeline.model_validate(document)
