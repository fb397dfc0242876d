"""Machine clients (docs/security.md, "Machine clients and CLI login"): a tenant's admins create,
list and delete them. A client's secret is in the answer to its creation only: voxelpipe never
keeps it, and no route shows it again (rotate: create a new client, then delete the old one).
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Path, Request
from pydantic import BaseModel, Field

from voxelpipe.api.auth import MACHINE_PREFIX, Action
from voxelpipe.api.dependencies import Caller, ClientTable, Issuer, Store, request_source, requires
from voxelpipe.api.problems import Problem, invalid_request
from voxelpipe.api.viewer_data import public_base_url
from voxelpipe.machine_clients import (
    DEFAULT_VALIDITY_DAYS,
    MAX_VALIDITY_DAYS,
    NAME_PATTERN,
    MachineClient,
    Scope,
)
from voxelpipe.pipeline import machine_clients as use_cases
from voxelpipe.ports import MachineClientExists
from voxelpipe.wiring import EnvVar

router = APIRouter(prefix="/clients", tags=["clients"])
NamePath = Annotated[str, Path(pattern=NAME_PATTERN, description="the client's name within its tenant")]


def validity_days() -> int:
    """The deployment's life for a new client (VOXELPIPE_MACHINE_CLIENT_MAX_DAYS, from context)."""
    value = os.environ.get(EnvVar.MACHINE_CLIENT_MAX_DAYS)
    return min(int(value), MAX_VALIDITY_DAYS) if value else DEFAULT_VALIDITY_DAYS


class CreateClient(BaseModel):
    name: str = Field(
        pattern=NAME_PATTERN, description="lower-case letters, digits and '-', unique in the tenant"
    )
    scopes: list[Scope] = Field(min_length=1, description="what the client may do (docs/api.md, Scopes)")
    valid_days: int | None = Field(
        default=None,
        ge=1,
        le=MAX_VALIDITY_DAYS,
        description="its life in days (default and at most: the deployment's, 90 unless configured)",
    )


class ClientView(BaseModel):
    name: str
    client_id: str
    scopes: list[Scope]
    created_at: datetime
    created_by: str | None
    expires_at: datetime
    expired: bool


class ClientCreated(BaseModel):
    client: ClientView
    client_secret: str = Field(description="shown once, now: voxelpipe does not keep it")
    api_url: str = Field(description="the base URL machine clients call (the API's, under /machine)")


class ClientList(BaseModel):
    items: list[ClientView]


def _view(client: MachineClient) -> ClientView:
    return ClientView(
        name=client.name,
        client_id=client.client_id,
        scopes=sorted(client.scopes),
        created_at=client.created_at,
        created_by=client.created_by,
        expires_at=client.expires_at,
        expired=client.expired(datetime.now(UTC)),
    )


@router.post(
    "",
    status_code=201,
    response_model=ClientCreated,
    **requires(Action.MANAGE_CLIENTS, 409, audit="client.create"),
)
def create_client(
    body: CreateClient, caller: Caller, request: Request, store: Store, clients: ClientTable, issuer: Issuer
) -> ClientCreated:
    longest = validity_days()
    days = body.valid_days or longest
    if days > longest:
        raise invalid_request("valid_days", f"at most {longest} days in this deployment")
    try:
        client, issued = use_cases.create_client(
            issuer,
            clients,
            store,
            caller.tenant,
            body.name,
            frozenset(body.scopes),
            days,
            actor=caller.subject,
            source=request_source(request),
        )
    except MachineClientExists as error:
        raise Problem(409, "client_exists", "A machine client of that name exists", str(error)) from error
    base = public_base_url(request).removesuffix(MACHINE_PREFIX)
    return ClientCreated(
        client=_view(client), client_secret=issued.client_secret, api_url=base + MACHINE_PREFIX
    )


@router.get("", response_model=ClientList, **requires(Action.MANAGE_CLIENTS, audit="client.list"))
def list_clients(caller: Caller, clients: ClientTable) -> ClientList:
    found = sorted(clients.of_tenant(caller.tenant), key=lambda c: c.name)
    return ClientList(items=[_view(client) for client in found])


@router.delete(
    "/{name}", response_model=ClientView, **requires(Action.MANAGE_CLIENTS, 404, audit="client.delete")
)
def delete_client(
    name: NamePath, caller: Caller, request: Request, store: Store, clients: ClientTable, issuer: Issuer
) -> ClientView:
    try:
        deleted = use_cases.delete_client(
            issuer, clients, store, caller.tenant, name, actor=caller.subject, source=request_source(request)
        )
    except use_cases.MachineClientNotFound as error:
        raise Problem(404, "client_not_found", "No such machine client", str(error)) from error
    return _view(deleted)
