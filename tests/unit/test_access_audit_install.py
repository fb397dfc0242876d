"""The access audit's construction (voxelpipe.api.audit), without AWS: an app whose data route
writes no audit row refuses to start, and a call whose row cannot be written is not answered."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest
from fastapi import APIRouter, FastAPI
from fastapi.testclient import TestClient

from voxelpipe.api import audit, problems
from voxelpipe.api.auth import Action, Principal, Role, principal
from voxelpipe.api.dependencies import ACTION_EXTENSION, quotas, requires
from voxelpipe.ports import AccessEntry


class FakeQuotas:
    def take_request(self, tenant: str, now: datetime) -> None:
        pass


class FakeLog:
    def __init__(self, fail: bool = False) -> None:
        self.entries: list[AccessEntry] = []
        self.fail = fail

    def append(self, entry: AccessEntry) -> None:
        if self.fail:
            raise RuntimeError("the table is gone")
        self.entries.append(entry)


def _app(router: APIRouter, log: FakeLog | None = None) -> FastAPI:
    app = FastAPI()
    problems.install(app)
    app.include_router(router)
    audit.install(app)
    if log is not None:
        # The middleware's log, replaced (the last middleware added is the audit's).
        app.user_middleware[0].kwargs["access_log"] = lambda: log
    app.dependency_overrides[principal] = lambda: Principal("someone", "lab-a", Role.VIEWER)
    app.dependency_overrides[quotas] = FakeQuotas
    return app


def test_a_route_without_declared_access_or_without_the_audit_refuses_to_start():
    undeclared = APIRouter()
    undeclared.get("/things")(lambda: {})
    with pytest.raises(RuntimeError, match="declares no access"):
        _app(undeclared)
    unaudited = APIRouter()
    unaudited.get("/things", openapi_extra={ACTION_EXTENSION: "read"})(lambda: {})
    with pytest.raises(RuntimeError, match="writes no audit row"):
        _app(unaudited)


def test_each_call_writes_one_row_and_an_unwritable_row_withholds_the_answer():
    router = APIRouter()

    @router.get("/things/{thing}", **requires(Action.READ))
    def thing(thing: str) -> dict[str, Any]:
        return {"thing": thing}

    @router.delete("/things/{thing}", **requires(Action.DELETE, audit="thing.delete"))
    def delete(thing: str) -> dict[str, Any]:
        return {}

    log = FakeLog()
    client = TestClient(_app(router, log))
    assert client.get("/things/a").json() == {"thing": "a"}
    forbidden = client.delete("/things/a")  # a viewer may not delete: refused, and recorded
    assert forbidden.status_code == 403
    assert [(e.action, e.status, e.resource, e.actor) for e in log.entries] == [
        ("GET /things/{thing}", 200, {"thing": "a"}, "someone"),
        ("thing.delete", 403, {"thing": "a"}, "someone"),
    ]
    assert (
        client.app.openapi()["paths"]["/things/{thing}"]["get"][audit.AUDIT_EXTENSION]
        == "GET /things/{thing}"
    )
    failing = TestClient(_app(router, FakeLog(fail=True)))
    withheld = failing.get("/things/a")
    assert withheld.status_code == 503 and withheld.json()["code"] == "audit_unavailable"
    assert withheld.json().get("thing") is None and withheld.headers[audit.REQUEST_ID_HEADER]
