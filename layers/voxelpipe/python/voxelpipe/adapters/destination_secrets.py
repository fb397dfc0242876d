"""Destinations' passwords and tokens in Secrets Manager: one secret per destination, named from
wiring (prefix from EnvVar.DESTINATION_SECRET_PREFIX), encrypted with the stack's data key."""

from __future__ import annotations

import contextlib
import os
from functools import cache
from typing import TYPE_CHECKING

import boto3

from voxelpipe.destinations import Credentials
from voxelpipe.wiring import EnvVar, destination_secret_name

if TYPE_CHECKING:
    from mypy_boto3_secretsmanager import SecretsManagerClient


@cache
def _client() -> SecretsManagerClient:
    return boto3.client("secretsmanager")


class SecretsManagerDestinationSecrets:
    def put(self, tenant: str, destination: str, credentials: Credentials) -> str:
        name = destination_secret_name(os.environ[EnvVar.DESTINATION_SECRET_PREFIX], tenant, destination)
        value = credentials.model_dump_json(exclude_none=True)
        client = _client()
        try:
            created = client.create_secret(
                Name=name, SecretString=value, Description="voxelpipe: a delivery destination's credentials"
            )
            return str(created["ARN"])
        except client.exceptions.ResourceExistsException:
            return str(client.put_secret_value(SecretId=name, SecretString=value)["ARN"])

    def get(self, secret_id: str) -> Credentials:
        value = _client().get_secret_value(SecretId=secret_id)["SecretString"]
        return Credentials.model_validate_json(value)

    def delete(self, secret_id: str) -> None:
        client = _client()
        with contextlib.suppress(client.exceptions.ResourceNotFoundException):
            client.delete_secret(SecretId=secret_id, ForceDeleteWithoutRecovery=True)
