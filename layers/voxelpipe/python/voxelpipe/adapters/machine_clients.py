"""Machine clients in DynamoDB (MachineClientRecord): the MachineClients port."""

from __future__ import annotations

from pynamodb.exceptions import PutError

from voxelpipe.adapters.dynamodb import refused_by_condition
from voxelpipe.machine_clients import MachineClient, Scope
from voxelpipe.ports import MachineClientExists
from voxelpipe.records import MachineClientRecord


def _client(record: MachineClientRecord) -> MachineClient:
    known = {scope.value for scope in Scope}
    return MachineClient(
        client_id=record.client_id,
        tenant=record.tenant,
        name=record.name,
        scopes=frozenset(Scope(name) for name in record.scopes or [] if name in known),
        created_at=record.created_at,
        created_by=record.created_by,
        expires_at=record.expires_at,
    )


class DynamoMachineClients:
    """Machine clients on the machine-clients table (EnvVar.MACHINE_CLIENTS_TABLE)."""

    def add(self, client: MachineClient) -> None:
        # The name's uniqueness is read from the tenant's index (eventually consistent): two admins
        # creating the same name within a second may both succeed; either can then be deleted.
        if any(found.name == client.name for found in self.of_tenant(client.tenant)):
            raise MachineClientExists(f"machine client {client.name!r} exists")
        record = MachineClientRecord(
            client.client_id,
            tenant=client.tenant,
            name=client.name,
            scopes=sorted(scope.value for scope in client.scopes),
            created_at=client.created_at,
            created_by=client.created_by,
            expires_at=client.expires_at,
        )
        try:
            record.save(condition=MachineClientRecord.client_id.does_not_exist())
        except PutError as error:
            if refused_by_condition(error):
                raise MachineClientExists(f"client id {client.client_id!r} exists") from None
            raise

    def get(self, client_id: str) -> MachineClient | None:
        try:
            return _client(MachineClientRecord.get(client_id, consistent_read=True))
        except MachineClientRecord.DoesNotExist:
            return None

    def of_tenant(self, tenant: str) -> list[MachineClient]:
        return [_client(record) for record in MachineClientRecord.tenant_name.query(tenant)]

    def remove(self, client_id: str) -> None:
        MachineClientRecord(client_id).delete()
