"""The tenants' delivery destinations in DynamoDB (DestinationRecord): the Destinations port."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

from pydantic import TypeAdapter
from pynamodb.exceptions import PutError

from voxelpipe.adapters.dynamodb import refused_by_condition
from voxelpipe.destinations import Destination
from voxelpipe.ports import DestinationExists, DestinationNotFound
from voxelpipe.records import DestinationRecord

if TYPE_CHECKING:
    from voxelpipe.ports import AnyDestination

_DESTINATION: TypeAdapter[AnyDestination] = TypeAdapter(Destination)


def parse_destination(document: object) -> AnyDestination:
    return _DESTINATION.validate_python(document)


class DynamoDestinations:
    """Destinations on the destinations table (EnvVar.DESTINATIONS_TABLE)."""

    def create(self, tenant: str, destination: AnyDestination, actor: str | None) -> None:
        record = DestinationRecord(
            tenant,
            destination.name,
            destination=destination.model_dump(mode="json"),
            created_at=datetime.now(UTC),
            created_by=actor,
        )
        try:
            record.save(condition=DestinationRecord.name.does_not_exist())
        except PutError as error:
            if refused_by_condition(error):
                raise DestinationExists(f"destination {destination.name!r} exists") from None
            raise

    def list(self, tenant: str) -> list[AnyDestination]:
        return [
            parse_destination(record.destination)
            for record in DestinationRecord.query(tenant, consistent_read=True)
        ]

    def _record(self, tenant: str, name: str) -> DestinationRecord:
        try:
            return DestinationRecord.get(tenant, name, consistent_read=True)
        except DestinationRecord.DoesNotExist:
            raise DestinationNotFound(f"no destination {name!r}") from None

    def get(self, tenant: str, name: str) -> AnyDestination:
        return parse_destination(self._record(tenant, name).destination)

    def delete(self, tenant: str, name: str) -> AnyDestination:
        record = self._record(tenant, name)
        record.delete()
        return parse_destination(record.destination)
