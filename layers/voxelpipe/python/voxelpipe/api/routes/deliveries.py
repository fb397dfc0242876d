"""A study's deliveries (docs/deliveries.md): each send of its outputs to a destination, and the
redrive of one that failed (only what the destination has not acknowledged is sent again)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Path, Request
from pydantic import BaseModel, Field

from voxelpipe.api.auth import Action
from voxelpipe.api.dependencies import (
    Caller,
    DeliveryQueueDep,
    DeliveryTable,
    Store,
    owned_study,
    request_source,
    requires,
)
from voxelpipe.api.problems import Problem
from voxelpipe.destinations import NAME_PATTERN
from voxelpipe.pipeline import deliveries as use_cases
from voxelpipe.records import DeliveryRecord
from voxelpipe.tracking import audit

router = APIRouter(prefix="/studies", tags=["deliveries"])


class DeliveryView(BaseModel):
    destination: str
    attempt: int = Field(description="the study attempt whose outputs it carries")
    status: str = Field(description="PENDING, DELIVERED or FAILED")
    internal: bool = Field(description="sent re-identified (the tenant's own PACS)")
    objects: list[str] = Field(description="the objects' keys (derived/{id}/dicom/...)")
    acknowledged: list[str] = Field(description="SOP Instance UIDs the destination accepted")
    attempts: int = Field(description="sends tried")
    error: str | None = None
    created_at: datetime
    updated_at: datetime


class DeliveryList(BaseModel):
    items: list[DeliveryView]


def _view(record: DeliveryRecord) -> DeliveryView:
    return DeliveryView(
        destination=record.destination,
        attempt=int(record.attempt),
        status=record.status,
        internal=bool(record.internal),
        objects=list(record.objects or []),
        acknowledged=list(dict.fromkeys(record.acknowledged or [])),
        attempts=int(record.attempts or 0),
        error=record.error,
        created_at=record.created_at,
        updated_at=record.updated_at,
    )


@router.get(
    "/{study_id}/deliveries", response_model=DeliveryList, **requires(Action.READ, 404, audit="delivery.list")
)
def list_deliveries(study_id: str, caller: Caller, store: Store, table: DeliveryTable) -> DeliveryList:
    owned_study(store, caller, study_id)
    return DeliveryList(items=[_view(record) for record in table.for_study(study_id)])


@router.post(
    "/{study_id}/deliveries/{destination}/redrive",
    status_code=202,
    response_model=DeliveryView,
    **requires(Action.UPLOAD, 404, audit="delivery.redrive"),
)
def redrive_delivery(
    study_id: str,
    destination: Annotated[str, Path(pattern=NAME_PATTERN)],
    caller: Caller,
    request: Request,
    store: Store,
    table: DeliveryTable,
    queue: DeliveryQueueDep,
) -> DeliveryView:
    study = owned_study(store, caller, study_id)
    try:
        record = use_cases.redrive(study, destination, table, queue)
    except use_cases.NothingToRedrive as error:
        raise Problem(404, "delivery_not_found", "No such delivery", str(error)) from error
    audit(
        store,
        study_id,
        "delivery_redriven",
        actor=caller.subject,
        source=request_source(request),
        detail={"destination": destination, "attempt": int(record.attempt)},
    )
    return _view(record)
