"""A tenant's machine clients: create and delete them (docs/security.md, "Machine clients and CLI
login"), each change audited under the tenant's clients trail (keys.clients_audit_key).

The issuer (Cognito, or the development issuer) makes the credentials; the client's record says
whose it is. The secret passes through once, in the answer to its creation.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from voxelpipe import tracking
from voxelpipe.keys import clients_audit_key
from voxelpipe.machine_clients import MachineClient, Scope
from voxelpipe.ports import ClientIssuer, IssuedClient, MachineClientExists, MachineClients, StudyStore

CLIENT_CREATED = "machine_client_created"
CLIENT_DELETED = "machine_client_deleted"


class MachineClientNotFound(LookupError):
    """The tenant has no machine client of that name."""


def create_client(
    issuer: ClientIssuer,
    clients: MachineClients,
    store: StudyStore,
    tenant: str,
    name: str,
    scopes: frozenset[Scope],
    valid_days: int,
    *,
    actor: str,
    source: str,
) -> tuple[MachineClient, IssuedClient]:
    """A new client and its credentials (MachineClientExists: the name is taken). The credentials
    are made first; should recording the client fail, they are deleted again."""
    if any(found.name == name for found in clients.of_tenant(tenant)):
        raise MachineClientExists(f"machine client {name!r} exists")
    issued = issuer.create(tenant, name, scopes)
    now = datetime.now(UTC)
    client = MachineClient(
        client_id=issued.client_id,
        tenant=tenant,
        name=name,
        scopes=scopes,
        created_at=now,
        created_by=actor,
        expires_at=now + timedelta(days=valid_days),
    )
    try:
        clients.add(client)
    except BaseException:
        issuer.delete(issued.client_id)
        raise
    detail = {
        "name": name,
        "client_id": client.client_id,
        "scopes": sorted(s.value for s in scopes),
        "expires_at": client.expires_at.isoformat(),
    }
    tracking.audit(
        store, clients_audit_key(tenant), CLIENT_CREATED, actor=actor, source=source, detail=detail
    )
    return client, issued


def delete_client(
    issuer: ClientIssuer,
    clients: MachineClients,
    store: StudyStore,
    tenant: str,
    name: str,
    *,
    actor: str,
    source: str,
) -> MachineClient:
    """Delete the tenant's client `name`: its record first (its tokens are refused from then on),
    then its credentials. MachineClientNotFound when the tenant has none of that name."""
    found = next((c for c in clients.of_tenant(tenant) if c.name == name), None)
    if found is None:
        raise MachineClientNotFound(f"no machine client {name!r}")
    clients.remove(found.client_id)
    issuer.delete(found.client_id)
    detail = {"name": name, "client_id": found.client_id}
    tracking.audit(
        store, clients_audit_key(tenant), CLIENT_DELETED, actor=actor, source=source, detail=detail
    )
    return found
