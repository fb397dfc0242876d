"""Subjects (docs/subjects.md): a tenant's pseudonymous subjects, and one subject with its studies.

A route module of its own under `/subjects`, so that further subject routes (the timeline) sit
beside these on the same router. Reads, as study reads are: any role of the tenant.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from voxelpipe import queries
from voxelpipe.adapters import secrets
from voxelpipe.api.auth import Action
from voxelpipe.api.dependencies import Caller, Store, requires
from voxelpipe.api.problems import Problem, not_found
from voxelpipe.api.schemas import SUBJECT_REF_PATTERN, SubjectDetail, SubjectPage
from voxelpipe.api.views import subject_detail, subject_view

router = APIRouter(prefix="/subjects", tags=["subjects"])

SubjectRef = Annotated[str, Path(pattern=SUBJECT_REF_PATTERN, description="a pseudonymous subject reference")]


@router.get("", response_model=SubjectPage, **requires(Action.READ, 400))
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


@router.get("/{subject_ref}", response_model=SubjectDetail, **requires(Action.READ, 404))
def get_subject(subject_ref: SubjectRef, caller: Caller, store: Store) -> SubjectDetail:
    """The subject and its studies, oldest first; 404 for a subject the tenant does not have."""
    subject = store.get_subject(caller.tenant, subject_ref)
    if subject is None:
        raise not_found("subject")
    return subject_detail(subject, store.studies_of_subject(caller.tenant, subject_ref))
