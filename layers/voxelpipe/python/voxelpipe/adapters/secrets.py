"""The deployment's webhook signing secret, from Secrets Manager (read once per container).

Keys for other purposes derive from it with their own context: each study's webhook key
(voxelpipe.webhooks), the list cursors' key (voxelpipe.queries)."""

from __future__ import annotations

import os
from functools import cache

import boto3

from voxelpipe.wiring import EnvVar


@cache
def _secret(secret_id: str) -> bytes:
    value: str = boto3.client("secretsmanager").get_secret_value(SecretId=secret_id)["SecretString"]
    return value.encode()


def webhook_secret() -> bytes:
    return _secret(os.environ[EnvVar.WEBHOOK_SECRET_ARN])
