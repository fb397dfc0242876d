"""What every route needs of a request: who calls, from where, and the study it names (if theirs)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from voxelpipe import queries
from voxelpipe.api.auth import Principal, principal
from voxelpipe.api.problems import not_found
from voxelpipe.records import StudyRecord

Caller = Annotated[Principal, Depends(principal)]


def request_source(request: Request) -> str:
    """Where the call came from, for the audit trail."""
    event = request.scope.get("aws.event") or {}
    ip = (event.get("requestContext") or {}).get("identity", {}).get("sourceIp")
    return str(ip or (request.client.host if request.client else "unknown"))


def owned_study(caller: Principal, study_id: str) -> StudyRecord:
    """The caller's tenant's study; another tenant's (or a deleted one) is a 404, as a missing one."""
    study = queries.study_for_tenant(caller.tenant, study_id)
    if study is None:
        raise not_found()
    return study
