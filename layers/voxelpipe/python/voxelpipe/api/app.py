"""The voxelpipe query API (see docs/api.md); every route is tenant-scoped and role-checked."""

from __future__ import annotations

from fastapi import FastAPI

import voxelpipe
from voxelpipe.api import problems
from voxelpipe.api.routes import analyses, models, references, service, studies
from voxelpipe.api.routes import viewer as viewer_routes


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
    for router in (service.router, analyses.router, models.router, references.router, studies.router):
        app.include_router(router)
    app.include_router(viewer_routes.router)  # viewer links, the viewer's data and pages
    return app
