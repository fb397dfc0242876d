"""What every route needs of a request: who calls, from where, and the study it names (if theirs)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from voxelpipe import queries
from voxelpipe.adapters.executions import StepFunctionsExecutions
from voxelpipe.adapters.queues import SqsWorkQueues
from voxelpipe.adapters.storage import Storage
from voxelpipe.adapters.study_table import DynamoStudyStore
from voxelpipe.api.auth import Principal, principal
from voxelpipe.api.problems import not_found
from voxelpipe.ports import Executions, StudyStore, WorkQueues
from voxelpipe.records import StudyRecord


def study_store() -> StudyStore:
    return DynamoStudyStore()


def storage() -> Storage:
    return Storage.from_environment()


def work_queues() -> WorkQueues:
    return SqsWorkQueues()


def executions() -> Executions:
    return StepFunctionsExecutions()


# What routes are given: FastAPI builds each per request (tests may override them).
Caller = Annotated[Principal, Depends(principal)]
Store = Annotated[StudyStore, Depends(study_store)]
Bucket = Annotated[Storage, Depends(storage)]
Queues = Annotated[WorkQueues, Depends(work_queues)]
StateMachine = Annotated[Executions, Depends(executions)]


def request_source(request: Request) -> str:
    """Where the call came from, for the audit trail."""
    event = request.scope.get("aws.event") or {}
    ip = (event.get("requestContext") or {}).get("identity", {}).get("sourceIp")
    return str(ip or (request.client.host if request.client else "unknown"))


def owned_study(store: StudyStore, caller: Principal, study_id: str) -> StudyRecord:
    """The caller's tenant's study; another tenant's (or a deleted one) is a 404, as a missing one."""
    study = queries.study_for_tenant(store, caller.tenant, study_id)
    if study is None:
        raise not_found()
    return study
