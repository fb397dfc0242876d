"""Bulk reprocess (admin): a query selects the tenant's studies, which are reprocessed at low
priority, a few at a time, with progress (voxelpipe.pipeline.batches)."""

from __future__ import annotations

import os
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from voxelpipe.api.audit import note
from voxelpipe.api.auth import Action
from voxelpipe.api.dependencies import Batches, Caller, Store, requires
from voxelpipe.api.problems import Problem, invalid_request
from voxelpipe.batches import BatchQuery, progress
from voxelpipe.pipeline.batches import BatchRefused, create_batch
from voxelpipe.pipeline.register import RegistrationRefused
from voxelpipe.ports import BatchStore
from voxelpipe.records import ReprocessBatchRecord
from voxelpipe.wiring import DEFAULT_BATCH_MAX_IN_FLIGHT, EnvVar

router = APIRouter(prefix="/reprocess-batches", tags=["reprocess batches"])


class CreateBatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    where: BatchQuery = Field(default_factory=BatchQuery, description="which of the tenant's studies")
    analyses: list[str] | None = Field(
        default=None,
        min_length=1,
        description="what to run (default: each study's own)",
        examples=[["regional"]],
    )
    parameters: dict[str, dict[str, Any]] | None = None
    max_in_flight: int | None = Field(
        default=None,
        ge=1,
        description="at most this many in flight at once (default and cap: the deployment's)",
    )


class BatchStudy(BaseModel):
    study_id: str
    state: str
    attempt: int | None = None
    reason: str | None = None
    error: dict[str, Any] | None = None


class BatchView(BaseModel):
    batch_id: str
    created_at: str
    finished_at: str | None
    actor: str | None
    where: dict[str, Any]
    analyses: list[str] | None
    parameters: dict[str, Any] | None
    max_in_flight: int
    progress: dict[str, Any]
    studies: list[BatchStudy] | None = None


class BatchList(BaseModel):
    items: list[BatchView]


def _deployment_max_in_flight() -> int:
    return int(os.environ.get(EnvVar.BATCH_MAX_IN_FLIGHT, DEFAULT_BATCH_MAX_IN_FLIGHT))


def _view(batch: ReprocessBatchRecord, batches: BatchStore, *, studies: bool) -> BatchView:
    items = batches.items_of(batch.batch_id)
    return BatchView(
        batch_id=batch.batch_id,
        created_at=batch.created_at.isoformat(),
        finished_at=batch.finished_at.isoformat() if batch.finished_at else None,
        actor=batch.actor,
        where=batch.where or {},
        analyses=batch.analyses,
        parameters=batch.parameters,
        max_in_flight=int(batch.max_in_flight or 1),
        progress=progress([str(item.state) for item in items]),
        studies=[
            BatchStudy(
                study_id=str(item.study_id),
                state=str(item.state),
                attempt=int(item.attempt) if item.attempt is not None else None,
                reason=item.reason,
                error=item.error,
            )
            for item in items
        ]
        if studies
        else None,
    )


@router.post(
    "", status_code=202, response_model=BatchView, **requires(Action.REPROCESS_BATCHES, audit="batch.create")
)
def create(body: CreateBatch, caller: Caller, request: Request, store: Store, batches: Batches) -> BatchView:
    cap = _deployment_max_in_flight()
    if body.max_in_flight is not None and body.max_in_flight > cap:
        raise invalid_request("max_in_flight", f"at most {cap} in this deployment")
    try:
        batch, _ = create_batch(
            store,
            batches,
            caller.tenant,
            actor=caller.subject,
            query=body.where,
            analyses=body.analyses,
            parameters=body.parameters,
            max_in_flight=body.max_in_flight or cap,
        )
    except (BatchRefused, RegistrationRefused) as refused:
        raise invalid_request(refused.field, str(refused)) from refused
    note(request, batch_id=batch.batch_id)  # the audit row names the batch it created
    return _view(batch, batches, studies=False)


@router.get("", response_model=BatchList, **requires(Action.REPROCESS_BATCHES, audit="batch.list"))
def list_batches(caller: Caller, batches: Batches) -> BatchList:
    return BatchList(
        items=[_view(batch, batches, studies=False) for batch in batches.tenant_batches(caller.tenant)]
    )


@router.get(
    "/{batch_id}", response_model=BatchView, **requires(Action.REPROCESS_BATCHES, 404, audit="batch.read")
)
def get_batch(batch_id: str, caller: Caller, batches: Batches) -> BatchView:
    batch = batches.get_batch(batch_id) if batch_id.isalnum() and len(batch_id) <= 64 else None
    if batch is None or batch.tenant != caller.tenant:  # another tenant's: as if missing
        raise Problem(404, "batch_not_found", "No such batch", f"no batch {batch_id!r} in this tenant")
    return _view(batch, batches, studies=True)
