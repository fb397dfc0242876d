"""The access audit (docs/security.md, "Audit"): one append-only row per API call on tenant data.

By construction, not by hand in each handler:

- every data route's access (`dependencies.requires`, or the viewer's grant routes) carries a
  dependency that names the caller (tenant, subject, role) for the row, before the role check, so
  refused calls (403, 404, 409, 422, 429) are recorded as well as answered ones;
- the route's audit action is declared with its access (`requires(..., audit="study.read")`,
  written into the OpenAPI document as AUDIT_EXTENSION); a route that declares none gets
  `{METHOD} {path}`;
- `AccessAuditMiddleware` writes the row as the answer starts, with the status answered, the source
  address and user agent, and the request id (API Gateway's `requestContext.requestId`, or a new
  one locally; answered as `X-Request-Id`). If the row cannot be written, the answer is a 503
  `audit_unavailable` instead: no access goes unrecorded;
- `install` refuses to build the app if a route in the OpenAPI document declares no access, or a
  data route lacks the audit dependency.

A call without a valid token (401) names no tenant and writes no row (API Gateway's access logs
keep it). Handlers add what the path does not show with `note` (the study a POST created, how
many download links it issued).
"""

from __future__ import annotations

import json
import logging
import os
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from fastapi import FastAPI, Request, routing
from fastapi.routing import APIRoute
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from voxelpipe.adapters.access_log import DynamoAccessLog
from voxelpipe.api.problems import PROBLEM_JSON, TYPE_BASE
from voxelpipe.keys import is_study_id
from voxelpipe.ports import AccessEntry
from voxelpipe.wiring import EnvVar

log = logging.getLogger(__name__)

AUDIT_EXTENSION = "x-voxelpipe-audit"  # the OpenAPI extension naming a route's audit action
ACCESS_EXTENSION = "x-voxelpipe-action"  # dependencies.ACTION_EXTENSION (who may call)
PUBLIC = "public"
REQUEST_ID_HEADER = "x-request-id"
_PENDING = "voxelpipe.audit"  # the scope key of the call's PendingAudit
_MARK = "__voxelpipe_audit__"  # set on every audit dependency: install() looks for it
VIEWER_GRANT_ROLE = "viewer-grant"
MACHINE_ROLE = "machine"  # a machine client's rows: the actor is its client id (docs/security.md)
MAX_PATH_CHARS = 4096  # a row keeps the path called up to this (API Gateway takes 10 KB of URL)


@dataclass
class PendingAudit:
    """What the row will say, filled in as the call goes: the middleware, then the dependency,
    then (optionally) the handler."""

    request_id: str
    source_ip: str
    user_agent: str | None
    tenant: str | None = None
    actor: str = ""
    role: str = ""
    action: str = ""
    route: str = ""
    resource: dict[str, Any] = field(default_factory=dict)
    written: bool = False


def audit_action(route: Any) -> str:
    """The route's (an APIRoute's) declared audit action, or `{METHOD} {path}` when it declares none."""
    declared = (route.openapi_extra or {}).get(AUDIT_EXTENSION)
    return str(declared) if declared else f"{sorted(route.methods)[0]} {route.path}"


def _pending(request: Request) -> PendingAudit:
    pending = request.scope.get(_PENDING)
    if not isinstance(pending, PendingAudit):
        raise RuntimeError("the access audit middleware is not installed: refusing to serve unaudited")
    return pending


def record_caller(request: Request, tenant: str, actor: str, role: str) -> None:
    """Name who calls this data route (the row is written as the answer starts)."""
    pending = _pending(request)
    route = request.scope.get("route")
    pending.tenant, pending.actor, pending.role = tenant, actor, role
    if isinstance(route, APIRoute):
        pending.action, pending.route = audit_action(route), route.path
    pending.resource.update({name: str(value) for name, value in request.path_params.items()})


def note(request: Request, **resource: Any) -> None:
    """Add to the row what the path does not show, e.g. `note(request, study_id=created)`."""
    _pending(request).resource.update(resource)


def audit_dependency(function: Callable[..., None]) -> Callable[..., None]:
    """Mark `function` (a FastAPI dependency calling record_caller) as a route's audit."""
    setattr(function, _MARK, True)
    return function


def _source(scope: Scope) -> tuple[str, str | None, str | None]:
    """(source IP, user agent, API Gateway's request id), from the Lambda event or the socket."""
    event = scope.get("aws.event")
    found = event.get("requestContext") if isinstance(event, dict) else None
    context: dict[str, Any] = found if isinstance(found, dict) else {}
    identity: dict[str, Any] = context["identity"] if isinstance(context.get("identity"), dict) else {}
    headers = {
        key.decode("latin-1").lower(): value.decode("latin-1") for key, value in scope.get("headers", [])
    }
    client = scope.get("client")
    ip = identity.get("sourceIp") or (client[0] if client else None) or "unknown"
    agent = identity.get("userAgent") or headers.get("user-agent")
    return str(ip), (str(agent)[:512] if agent else None), context.get("requestId")


def access_log_from_environment() -> DynamoAccessLog:
    days = os.environ.get(EnvVar.AUDIT_RETENTION_DAYS, "").strip()
    return DynamoAccessLog(retention_days=int(days) if days else None)


class AccessAuditMiddleware:
    """Writes the call's audit row (if a data route named its caller) as the answer starts."""

    def __init__(self, app: ASGIApp, access_log: Callable[[], Any] = access_log_from_environment) -> None:
        self.app = app
        self.access_log = access_log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        ip, agent, request_id = _source(scope)
        pending = PendingAudit(request_id=request_id or uuid.uuid4().hex, source_ip=ip, user_agent=agent)
        scope[_PENDING] = pending
        refused = False

        async def audited_send(message: Message) -> None:
            nonlocal refused
            if refused:
                return  # the 503 went out instead of the app's answer
            if message["type"] == "http.response.start":
                if not await self._write(pending, scope, int(message["status"])):
                    refused = True
                    await _unavailable(send, pending, scope)
                    return
                headers = list(message.get("headers", []))
                headers.append((REQUEST_ID_HEADER.encode(), pending.request_id.encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, audited_send)
        except Exception:
            await self._write(pending, scope, 500)  # the server's error answer is recorded too
            raise

    async def _write(self, pending: PendingAudit, scope: Scope, status: int) -> bool:
        """Write the row once (if a data route named the caller); False when it could not be."""
        if pending.written or pending.tenant is None:
            return True
        pending.written = True
        # Only an id that can be a study's keys the study index (a key is at most 2 KB; a path may
        # carry anything, and the row keeps it as called).
        named = str(pending.resource.get("study_id") or "")
        study_id = named if is_study_id(named) else None
        entry = AccessEntry(
            tenant=pending.tenant,
            actor=pending.actor,
            role=pending.role,
            action=pending.action,
            method=str(scope.get("method", "")),
            route=pending.route,
            path=str(scope.get("path", ""))[:MAX_PATH_CHARS],
            status=status,
            source_ip=pending.source_ip,
            user_agent=pending.user_agent,
            request_id=pending.request_id,
            at=datetime.now(UTC),
            study_id=study_id,
            resource=pending.resource,
        )
        try:
            await run_in_threadpool(self.access_log().append, entry)
        except Exception:
            log.exception("audit row not written: the answer is withheld", extra={"path": entry.path})
            return False
        return True


async def _unavailable(send: Send, pending: PendingAudit, scope: Scope) -> None:
    body = json.dumps(
        {
            "type": TYPE_BASE + "audit_unavailable",
            "title": "The call could not be audited",
            "status": 503,
            "code": "audit_unavailable",
            "detail": "its audit row could not be written, so its answer is withheld; try again",
            "instance": str(scope.get("path", "")),
        }
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 503,
            "headers": [
                (b"content-type", PROBLEM_JSON.encode()),
                (b"content-length", str(len(body)).encode()),
                (REQUEST_ID_HEADER.encode(), pending.request_id.encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _dependency_calls(route: Any) -> Iterable[Any]:
    stack = list(route.dependant.dependencies)
    while stack:
        dependant = stack.pop()
        yield dependant.call
        stack.extend(dependant.dependencies)


def install(app: FastAPI) -> None:
    """Audit every data route of `app` (see the module's docstring), or refuse to build it."""
    for route in routing.iter_route_contexts(app.routes):
        if not isinstance(route.original_route, APIRoute) or not route.include_in_schema:
            continue
        declared = (route.openapi_extra or {}).get(ACCESS_EXTENSION)
        where = f"{', '.join(sorted(route.methods or ()))} {route.path}"
        if declared is None:
            raise RuntimeError(f"{where} declares no access (api.dependencies.requires)")
        if declared != PUBLIC and not any(getattr(call, _MARK, False) for call in _dependency_calls(route)):
            raise RuntimeError(f"{where} reads or changes tenant data but writes no audit row")
    document = app.openapi

    def openapi() -> dict[str, Any]:
        """The document, each data operation naming its audit action (declared or the default)."""
        if app.openapi_schema is None:
            for path, item in document()["paths"].items():
                for method, operation in item.items():
                    if not isinstance(operation, dict) or operation.get(ACCESS_EXTENSION) in (None, PUBLIC):
                        continue
                    operation.setdefault(AUDIT_EXTENSION, f"{method.upper()} {path}")
        return app.openapi_schema or document()

    app.openapi = openapi  # type: ignore[method-assign]
    app.add_middleware(AccessAuditMiddleware)
