"""The voxelpipe query API (see docs/api.md); every route is tenant-scoped and role-checked."""

from __future__ import annotations

import os

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

import voxelpipe
from voxelpipe.api import audit, problems
from voxelpipe.api.auth import MACHINE_PREFIX, MACHINE_SCOPE_KEY
from voxelpipe.api.routes import (
    analyses,
    batches,
    clients,
    deliveries,
    destinations,
    dicomweb,
    measures,
    models,
    quotas,
    references,
    rules,
    service,
    studies,
    subjects,
)
from voxelpipe.api.routes import audit as audit_routes
from voxelpipe.api.routes import viewer as viewer_routes
from voxelpipe.wiring import EnvVar

# What a browser may send and read across origins (docs/api.md, "CORS").
CORS_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
CORS_HEADERS = ("Authorization", "Content-Type")
CORS_EXPOSED_HEADERS = ("Location", "Retry-After", "X-Request-Id")
CORS_MAX_AGE_S = 600


def cors_allowed_origins() -> tuple[str, ...]:
    """The origins `VOXELPIPE_CORS_ALLOWED_ORIGINS` lists (comma-separated); none when unset."""
    value = os.environ.get(EnvVar.CORS_ALLOWED_ORIGINS, "")
    return tuple(origin.strip().rstrip("/") for origin in value.split(",") if origin.strip())


class MachinePath:
    """Serves the API under MACHINE_PREFIX too, for machine clients: `/machine/studies` is
    `/studies`, marked as a machine's request (api/auth.py takes only access tokens there, and only
    there; API Gateway's authorizer checks their scopes on that path)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] in ("http", "websocket") and (
            path == MACHINE_PREFIX or path.startswith(f"{MACHINE_PREFIX}/")
        ):
            # The prefix becomes the root path: routes match what follows it, links keep it.
            scope = {**scope, "root_path": MACHINE_PREFIX, MACHINE_SCOPE_KEY: True}
        await self.app(scope, receive, send)


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
    origins = cors_allowed_origins()
    if origins:
        # A browser front end on these origins may call the API (API Gateway lets the preflight through).
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(origins),
            allow_methods=list(CORS_METHODS),
            allow_headers=list(CORS_HEADERS),
            expose_headers=list(CORS_EXPOSED_HEADERS),
            max_age=CORS_MAX_AGE_S,
        )
    for router in (
        service.router,
        analyses.router,
        models.router,
        references.router,
        rules.router,
        destinations.router,
        studies.router,
        subjects.router,  # subjects, their studies and timelines (docs/subjects.md)
        deliveries.router,
        measures.router,  # cohort exports; API Gateway sends them to the export function
        batches.router,
        clients.router,
    ):
        app.include_router(router)
    app.include_router(viewer_routes.router)  # viewer links, the viewer's data and pages
    app.include_router(dicomweb.router)  # STOW-RS, QIDO-RS, WADO-RS (docs/dicomweb.md)
    app.add_middleware(MachinePath)
    app.include_router(audit_routes.router)  # GET /audit (docs/security.md, "Audit")
    app.include_router(quotas.router)  # GET /usage, GET/PUT /quotas/{tenant}
    # Last: every route above is checked, and each call on tenant data writes one audit row.
    audit.install(app)
    return app
