"""The web viewer: links for signed-in users, the data the pages read with a link's grant, and the
pages and their static files (docs/viewer.md).

- `POST /studies/{id}/viewer-link`, `POST /subjects/{ref}/viewer-link` (a user's token, READ): a
  link to the viewer with a short-lived grant in its fragment (never sent to a server).
- `GET /viewer/api/...` (the grant as a bearer token): what the pages show.
- `GET /viewer/studies/{id}`, `/viewer/subjects/{ref}`, `/viewer/static/...`: the pages, our
  script and styles, and NiiVue. They carry no data, so they need no token (API Gateway lets
  /viewer through without its authorizer; the data routes check the grant here).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import Response
from pydantic import BaseModel

from voxelpipe import queries
from voxelpipe.adapters import secrets
from voxelpipe.api.audit import AUDIT_EXTENSION, VIEWER_GRANT_ROLE, audit_dependency, note, record_caller
from voxelpipe.api.auth import Action
from voxelpipe.api.dependencies import ACTION_EXTENSION, Bucket, Caller, Store, owned_study, requires
from voxelpipe.api.problems import Problem, not_found, problem_responses
from voxelpipe.api.viewer_data import (
    StudyViewerData,
    SubjectViewerData,
    public_base_url,
    study_data,
    subject_studies,
    viewer_grant,
)
from voxelpipe.live import live_url
from voxelpipe.pipeline.subject_timeline import subject_timeline
from voxelpipe.viewer.assets import NIIVUE_DIR, NIIVUE_URL_PATH, NIIVUE_VERSION, STATIC_DIR, niivue_missing
from voxelpipe.viewer_grants import ViewerGrant, grant_key, issue_grant

# The ACTION_EXTENSION of routes whose credential is a viewer grant, not a user's token.
VIEWER_GRANT = "viewer_grant"
SUBJECT_REF_PATTERN = r"^[A-Za-z0-9._-]{1,64}$"  # CreateStudy's subject_ref
SubjectRef = Annotated[str, Path(pattern=SUBJECT_REF_PATTERN, description="a pseudonymous subject reference")]
Grant = Annotated[ViewerGrant, Depends(viewer_grant)]

CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".txt": "text/plain; charset=utf-8",
}
# The NiiVue file's path names its version: it never changes, so browsers may keep it a year.
IMMUTABLE = "public, max-age=31536000, immutable"
# Our own pages, script and styles change with each deployment: revalidated every time.
REVALIDATE = "no-cache"
# The pages load only what they are served with, and volumes from the bucket's presigned URLs.
PAGE_SECURITY = {
    "content-security-policy": (
        "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data: blob:; connect-src 'self' https: http: wss: ws: data: blob:; "
        "worker-src 'self' blob:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "referrer-policy": "no-referrer",
    "x-content-type-options": "nosniff",
}

router = APIRouter(tags=["viewer"])


class ViewerLink(BaseModel):
    url: str
    expires_at: datetime


@audit_dependency
def _audited_grant(request: Request, grant: Grant) -> None:
    """The audit row of a grant's read: the grant's tenant, and the user it was issued to."""
    record_caller(request, grant.tenant, grant.issued_to, VIEWER_GRANT_ROLE)


def _grant_route(*statuses: int, audit: str) -> dict[str, Any]:
    """A data route's access: a viewer grant, checked by the route's `Grant` dependency; each call
    audited (`audit` its action) under the grant's tenant and the user it was issued to."""
    return {
        "dependencies": [Depends(_audited_grant)],
        "openapi_extra": {ACTION_EXTENSION: VIEWER_GRANT, AUDIT_EXTENSION: audit},
        "responses": problem_responses(401, *statuses),
    }


def _link(request: Request, path: str, token: str, grant: ViewerGrant) -> ViewerLink:
    note(request, grant_expires_at=grant.expires_at)  # the audit row: until when the link reads
    return ViewerLink(
        url=f"{public_base_url(request)}{path}#grant={token}",
        expires_at=datetime.fromtimestamp(grant.expires_at, UTC),
    )


@router.post(
    "/studies/{study_id}/viewer-link",
    response_model=ViewerLink,
    **requires(Action.READ, 404, audit="study.viewer_link"),
)
def study_viewer_link(study_id: str, caller: Caller, store: Store, request: Request) -> ViewerLink:
    study = owned_study(store, caller, study_id)
    token, grant = issue_grant(
        grant_key(secrets.webhook_secret()),
        tenant=caller.tenant,
        issued_to=caller.subject,
        study_id=study.study_id,
    )
    return _link(request, f"/viewer/studies/{study.study_id}", token, grant)


@router.post(
    "/subjects/{subject_ref}/viewer-link",
    response_model=ViewerLink,
    **requires(Action.READ, 404, audit="subject.viewer_link"),
)
def subject_viewer_link(
    subject_ref: SubjectRef, caller: Caller, store: Store, request: Request
) -> ViewerLink:
    if next(subject_studies(store, caller.tenant, subject_ref), None) is None:
        raise not_found("subject")  # none of this tenant's studies is of it (another tenant's: the same)
    token, grant = issue_grant(
        grant_key(secrets.webhook_secret()),
        tenant=caller.tenant,
        issued_to=caller.subject,
        subject_ref=subject_ref,
    )
    return _link(request, f"/viewer/subjects/{subject_ref}", token, grant)


@router.get(
    "/viewer/api/studies/{study_id}",
    response_model=StudyViewerData,
    **_grant_route(404, audit="viewer.study_read"),
)
def viewer_study(study_id: str, grant: Grant, store: Store, bucket: Bucket) -> StudyViewerData:
    study = queries.study_for_tenant(store, grant.tenant, study_id)
    subject_ref = (study.subject or {}).get("subject_ref") if study is not None else None
    if study is None or not grant.covers(grant.tenant, study.study_id, subject_ref):
        raise not_found()  # a study the grant does not cover is one that does not exist
    return study_data(study, store, bucket, grant)


@router.get(
    "/viewer/api/subjects/{subject_ref}",
    response_model=SubjectViewerData,
    **_grant_route(404, audit="viewer.subject_read"),
)
def viewer_subject(subject_ref: SubjectRef, grant: Grant, store: Store, bucket: Bucket) -> SubjectViewerData:
    if grant.subject_ref != subject_ref:
        raise not_found("subject")
    studies = [study_data(s, store, bucket, grant) for s in subject_studies(store, grant.tenant, subject_ref)]
    return SubjectViewerData(
        subject_ref=subject_ref,
        studies=studies,
        timeline=subject_timeline(store, grant.tenant, subject_ref),
        grant_expires_at=datetime.fromtimestamp(grant.expires_at, UTC),
        live_url=live_url(),
    )


def _unavailable(detail: str) -> Problem:
    return Problem(503, "viewer_unavailable", "The viewer is not installed on this server", detail)


def _page(mode: str) -> Response:
    missing = niivue_missing()
    if missing:
        raise _unavailable(missing)
    html = (STATIC_DIR / "viewer.html").read_text()
    html = html.replace("{{MODE}}", mode).replace(
        "{{NIIVUE_PATH}}", ".." + NIIVUE_URL_PATH.removeprefix("/viewer")
    )
    return Response(
        html, media_type=CONTENT_TYPES[".html"], headers={"cache-control": REVALIDATE, **PAGE_SECURITY}
    )


@router.get("/viewer/studies/{study_id}", include_in_schema=False)
def study_page(study_id: str) -> Response:
    return _page("study")


@router.get("/viewer/subjects/{subject_ref}", include_in_schema=False)
def subject_page(subject_ref: str) -> Response:
    return _page("subject")


@router.get("/viewer/static/{path:path}", include_in_schema=False)
def static_file(path: str) -> Response:
    """Our pages' files, and NiiVue under niivue/{version}/ (only the pinned version's)."""
    root = STATIC_DIR.resolve()
    file = (root / path).resolve()
    content_type = CONTENT_TYPES.get(file.suffix)
    if not file.is_relative_to(root) or not file.is_file() or content_type is None:
        if path.startswith(f"niivue/{NIIVUE_VERSION}/") and niivue_missing():
            raise _unavailable(niivue_missing() or "")
        raise not_found("file")
    immutable = file.is_relative_to(NIIVUE_DIR.resolve())
    headers = {"cache-control": IMMUTABLE if immutable else REVALIDATE, "x-content-type-options": "nosniff"}
    return Response(file.read_bytes(), media_type=content_type, headers=headers)
