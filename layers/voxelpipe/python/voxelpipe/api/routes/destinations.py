"""Delivery destinations (docs/deliveries.md): a tenant's admins add, list, read and delete them.

A destination is validated when saved (a 422 names the failing field); its password or token
(`secret`) goes to Secrets Manager and is never answered back: a destination shows only whether
it has one. Every change is audited under the tenant's destinations trail
(keys.destinations_audit_key).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Request
from pydantic import BaseModel, Field, model_validator

from voxelpipe.api.auth import Action
from voxelpipe.api.dependencies import Caller, DestinationTable, Secrets, Store, request_source, requires
from voxelpipe.api.problems import Problem, invalid_request
from voxelpipe.destinations import (
    NAME_PATTERN,
    DicomWebDestination,
    DimseDestination,
    S3Destination,
)
from voxelpipe.pipeline import destinations as use_cases
from voxelpipe.ports import DestinationExists, DestinationNotFound

router = APIRouter(prefix="/destinations", tags=["destinations"])

_SECRET = Field(
    default=None,
    min_length=1,
    max_length=4096,
    description="the password (basic auth) or token (bearer): kept in Secrets Manager, never shown",
)


class _NoSecretId(BaseModel):
    @model_validator(mode="after")
    def _no_secret_id(self) -> Any:
        if getattr(self, "secret_id", None) is not None:
            raise ValueError("secret_id is set by voxelpipe: give the secret itself as `secret`")
        return self


class NewDicomWebDestination(DicomWebDestination, _NoSecretId):
    secret: str | None = _SECRET


class NewDimseDestination(DimseDestination, _NoSecretId):
    secret: str | None = _SECRET


class NewS3Destination(S3Destination, _NoSecretId):
    secret: str | None = _SECRET


NewDestination = Annotated[
    NewDicomWebDestination | NewDimseDestination | NewS3Destination, Field(discriminator="kind")
]


class DestinationView(BaseModel):
    name: str
    kind: Literal["dicomweb", "dimse", "s3"]
    internal: bool
    has_secret: bool = Field(description="whether a password or token is kept for it (never shown)")
    destination: dict[str, Any] = Field(description="its settings, without the secret or the secret's id")


class DestinationList(BaseModel):
    items: list[DestinationView]


def _view(destination: DicomWebDestination | DimseDestination | S3Destination) -> DestinationView:
    return DestinationView(
        name=destination.name,
        kind=destination.kind.value,
        internal=destination.internal,
        has_secret=destination.secret_id is not None,
        destination=destination.model_dump(mode="json", exclude={"secret_id"}),
    )


def _stored(body: NewDicomWebDestination | NewDimseDestination | NewS3Destination) -> Any:
    fields = body.model_dump(exclude={"secret"})
    if isinstance(body, NewDicomWebDestination):
        return DicomWebDestination.model_validate(fields)
    if isinstance(body, NewDimseDestination):
        return DimseDestination.model_validate(fields)
    return S3Destination.model_validate(fields)


NamePath = Annotated[str, Path(pattern=NAME_PATTERN, description="the destination's name")]


def _not_found(error: DestinationNotFound) -> Problem:
    return Problem(404, "destination_not_found", "No such destination", str(error))


@router.post(
    "",
    status_code=201,
    response_model=DestinationView,
    **requires(Action.MANAGE_DESTINATIONS, 409, audit="destination.create"),
)
def create_destination(
    body: NewDestination,
    caller: Caller,
    request: Request,
    store: Store,
    table: DestinationTable,
    secrets: Secrets,
) -> DestinationView:
    try:
        created = use_cases.create_destination(
            table,
            secrets,
            store,
            caller.tenant,
            _stored(body),
            body.secret,
            actor=caller.subject,
            source=request_source(request),
        )
    except DestinationExists as error:
        raise Problem(409, "destination_exists", "A destination of that name exists", str(error)) from error
    except ValueError as error:
        raise invalid_request("secret", str(error)) from error
    return _view(created)


@router.get(
    "", response_model=DestinationList, **requires(Action.MANAGE_DESTINATIONS, audit="destination.list")
)
def list_destinations(caller: Caller, table: DestinationTable) -> DestinationList:
    return DestinationList(items=[_view(destination) for destination in table.list(caller.tenant)])


@router.get(
    "/{name}",
    response_model=DestinationView,
    **requires(Action.MANAGE_DESTINATIONS, 404, audit="destination.read"),
)
def get_destination(name: NamePath, caller: Caller, table: DestinationTable) -> DestinationView:
    try:
        return _view(table.get(caller.tenant, name))
    except DestinationNotFound as error:
        raise _not_found(error) from error


@router.delete(
    "/{name}",
    response_model=DestinationView,
    **requires(Action.MANAGE_DESTINATIONS, 404, audit="destination.delete"),
)
def delete_destination(
    name: NamePath, caller: Caller, request: Request, store: Store, table: DestinationTable, secrets: Secrets
) -> DestinationView:
    try:
        deleted = use_cases.delete_destination(
            table, secrets, store, caller.tenant, name, actor=caller.subject, source=request_source(request)
        )
    except DestinationNotFound as error:
        raise _not_found(error) from error
    return _view(deleted)
