"""Errors as RFC 9457 problem details, each with a stable machine-readable code."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict
from starlette.exceptions import HTTPException as StarletteHTTPException

PROBLEM_JSON = "application/problem+json"
TYPE_BASE = "https://voxelpipe.dev/problems/"


class ProblemDetails(BaseModel):
    """An error answer (RFC 9457), as the OpenAPI document describes it; some codes add fields."""

    model_config = ConfigDict(extra="allow")

    type: str
    title: str
    status: int
    code: str
    detail: str | None = None
    instance: str


# What each documented error status means, for the OpenAPI document's responses.
PROBLEM_STATUSES: dict[int, str] = {
    400: "Bad request (e.g. invalid_cursor)",
    401: "unauthenticated: no token, or a malformed, unsigned or expired one",
    403: "forbidden: the role may not do this, or the token names no tenant or role",
    404: "Not found for this tenant (another tenant's is the same answer)",
    409: "Conflict with the resource's state",
    406: "not_acceptable: no media type the request accepts is one this resource answers in",
    413: "Too large for one request or response (the detail names the alternative)",
    415: "unsupported_media_type: the body is not of a media type this route takes",
    429: "quota_exceeded: a tenant quota is reached (`limit` names it; Retry-After says when it resets)",
}


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` entries for these error statuses, each a problem details body."""
    return {status: {"model": ProblemDetails, "description": PROBLEM_STATUSES[status]} for status in statuses}


class Problem(Exception):
    """An error the API answers with: HTTP status, stable code, and a sentence for people."""

    def __init__(
        self,
        status: int,
        code: str,
        title: str,
        detail: str | None = None,
        *,
        headers: Mapping[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail or title)
        self.status, self.code, self.title, self.detail, self.extra = status, code, title, detail, extra
        self.headers = dict(headers or {})  # e.g. Retry-After on a 429


def not_found(what: str = "study") -> Problem:
    # Another tenant's study is indistinguishable from a missing one.
    return Problem(404, f"{what}_not_found", f"No such {what}")


def invalid_request(field: str, message: str) -> Problem:
    """A 422 naming the one field that is wrong, shaped as the request validator's answers are."""
    return Problem(
        422,
        "validation_failed",
        "The request is not valid",
        f"check: {field}",
        errors=[{"field": field, "message": message}],
    )


def _body(
    status: int, code: str, title: str, detail: str | None, instance: str, **extra: Any
) -> dict[str, Any]:
    body: dict[str, Any] = {"type": TYPE_BASE + code, "title": title, "status": status, "code": code}
    if detail:
        body["detail"] = detail
    body["instance"] = instance
    body.update(extra)
    return body


def install(app: FastAPI) -> None:
    @app.exception_handler(Problem)
    async def problem(request: Request, exc: Problem) -> JSONResponse:
        content = _body(exc.status, exc.code, exc.title, exc.detail, request.url.path, **exc.extra)
        return JSONResponse(content, status_code=exc.status, media_type=PROBLEM_JSON, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {
                # The field as the client named it: body.files.0.size -> files[0].size
                "field": ".".join(str(p) for p in error["loc"] if p not in ("body", "query", "path")),
                "message": error["msg"],
            }
            for error in exc.errors()
        ]
        fields = ", ".join(e["field"] or "request" for e in errors)
        content = _body(
            422, "validation_failed", "The request is not valid", f"check: {fields}", request.url.path
        )
        content["errors"] = errors
        return JSONResponse(content, status_code=422, media_type=PROBLEM_JSON)

    @app.exception_handler(StarletteHTTPException)
    async def http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, f"http_{exc.status_code}")
        content = _body(exc.status_code, code, str(exc.detail), None, request.url.path)
        return JSONResponse(content, status_code=exc.status_code, media_type=PROBLEM_JSON)
