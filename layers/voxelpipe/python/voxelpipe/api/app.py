"""The voxelpipe query API (see docs/api.md); every route is tenant-scoped and role-checked."""

from __future__ import annotations

import os

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

import voxelpipe
from voxelpipe.api import audit, problems
from voxelpipe.api.routes import (
    analyses,
    deliveries,
    destinations,
    dicomweb,
    models,
    quotas,
    references,
    rules,
    service,
    studies,
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
        deliveries.router,
    ):
        app.include_router(router)
    app.include_router(viewer_routes.router)  # viewer links, the viewer's data and pages
    app.include_router(dicomweb.router)  # STOW-RS, QIDO-RS, WADO-RS (docs/dicomweb.md)
    app.include_router(audit_routes.router)  # GET /audit (docs/security.md, "Audit")
    app.include_router(quotas.router)  # GET /usage, GET/PUT /quotas/{tenant}
    # Last: every route above is checked, and each call on tenant data writes one audit row.
    audit.install(app)
    return app
