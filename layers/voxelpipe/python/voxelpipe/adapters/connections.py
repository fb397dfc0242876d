"""The live-progress connections: DynamoDB through PynamoDB, and API Gateway's Management API."""

from __future__ import annotations

import os
from functools import cache
from typing import Any

import boto3
from botocore.exceptions import ClientError
from pynamodb.exceptions import UpdateError

from voxelpipe.adapters.dynamodb import refused_by_condition
from voxelpipe.records import ConnectionRecord
from voxelpipe.wiring import EnvVar


class DynamoConnectionStore:
    def save_connection(self, connection: ConnectionRecord) -> None:
        connection.save()

    def get_connection(self, connection_id: str) -> ConnectionRecord | None:
        try:
            return ConnectionRecord.get(connection_id, consistent_read=True)
        except ConnectionRecord.DoesNotExist:
            return None

    def set_studies(self, connection_id: str, studies: list[str]) -> bool:
        record = ConnectionRecord(connection_id)
        try:
            record.update(
                actions=[ConnectionRecord.studies.set(studies)],
                condition=ConnectionRecord.connection_id.exists(),
            )
        except UpdateError as error:
            if refused_by_condition(error):
                return False
            raise
        return True

    def delete_connection(self, connection_id: str) -> None:
        ConnectionRecord(connection_id).delete()

    def tenant_connections(self, tenant: str) -> list[ConnectionRecord]:
        return list(ConnectionRecord.tenant_connections.query(tenant))


@cache
def _management_client(endpoint: str) -> Any:  # boto3-stubs has no apigatewaymanagementapi extra here
    return boto3.client("apigatewaymanagementapi", endpoint_url=endpoint)


class ManagementApiConnections:
    """PostToConnection on the stage whose callback URL `VOXELPIPE_LIVE_CALLBACK_URL` names."""

    def __init__(self, endpoint: str | None = None) -> None:
        self.endpoint = endpoint or os.environ[EnvVar.LIVE_CALLBACK_URL]

    def post(self, connection_id: str, data: bytes) -> bool:
        try:
            _management_client(self.endpoint).post_to_connection(ConnectionId=connection_id, Data=data)
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") == "GoneException":
                return False
            raise
        return True
