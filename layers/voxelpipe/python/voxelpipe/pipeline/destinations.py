"""A tenant's delivery destinations: create and delete them, each change audited under the tenant's
destinations trail (keys.destinations_audit_key); a password or token goes to Secrets Manager and
the destination keeps only the secret's id (docs/deliveries.md)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from voxelpipe import tracking
from voxelpipe.destinations import check_secret, credentials_for
from voxelpipe.keys import destinations_audit_key
from voxelpipe.ports import DestinationExists, Destinations, DestinationSecrets, StudyStore

if TYPE_CHECKING:
    from voxelpipe.ports import AnyDestination

DESTINATION_CREATED = "destination_created"
DESTINATION_DELETED = "destination_deleted"


def _summary(destination: AnyDestination) -> dict[str, Any]:
    """What the audit row keeps: the destination without its secret's id."""
    return destination.model_dump(mode="json", exclude={"secret_id", "description"})


def create_destination(
    destinations: Destinations,
    secrets: DestinationSecrets,
    store: StudyStore,
    tenant: str,
    destination: AnyDestination,
    secret: str | None,
    *,
    actor: str,
    source: str,
) -> AnyDestination:
    """Store a new destination (ValueError: a secret missing or not wanted; DestinationExists: the
    name is taken), its secret first, so a stored destination always finds its secret."""
    check_secret(destination, secret)
    try:
        destinations.get(tenant, destination.name)
        raise DestinationExists(f"destination {destination.name!r} exists")
    except LookupError:
        pass
    if secret:
        secret_id = secrets.put(tenant, destination.name, credentials_for(destination, secret))
        destination = destination.model_copy(update={"secret_id": secret_id})
    else:
        destination = destination.model_copy(update={"secret_id": None})
    destinations.create(tenant, destination, actor)
    detail = {"tenant": tenant, **_summary(destination)}
    tracking.audit(
        store, destinations_audit_key(tenant), DESTINATION_CREATED, actor=actor, source=source, detail=detail
    )
    return destination


def delete_destination(
    destinations: Destinations,
    secrets: DestinationSecrets,
    store: StudyStore,
    tenant: str,
    name: str,
    *,
    actor: str,
    source: str,
) -> AnyDestination:
    """Remove a destination and its secret (DestinationNotFound when there is none)."""
    deleted = destinations.delete(tenant, name)
    if deleted.secret_id:
        secrets.delete(deleted.secret_id)
    detail = {"tenant": tenant, **_summary(deleted)}
    tracking.audit(
        store, destinations_audit_key(tenant), DESTINATION_DELETED, actor=actor, source=source, detail=detail
    )
    return deleted
