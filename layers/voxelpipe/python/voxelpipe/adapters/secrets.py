"""The deployment's secrets, from Secrets Manager (each read once per container).

The webhook signing secret: keys for other purposes derive from it with their own context, each
study's webhook key (voxelpipe.webhooks), the list cursors' key (voxelpipe.queries). The pseudonym
secret: subjects' pseudonyms, their date offsets and exam study ids (voxelpipe.pseudonyms), a secret
of its own so that rotating the webhook root never moves a subject's dates."""

from __future__ import annotations

import os
from functools import cache

import boto3

from voxelpipe.pseudonyms import Pseudonyms
from voxelpipe.wiring import EnvVar


@cache
def _secret(secret_id: str) -> bytes:
    value: str = boto3.client("secretsmanager").get_secret_value(SecretId=secret_id)["SecretString"]
    return value.encode()


def webhook_secret() -> bytes:
    return _secret(os.environ[EnvVar.WEBHOOK_SECRET_ARN])


def pseudonym_secret() -> bytes:
    """The deployment's pseudonym secret (voxelpipe.pseudonyms): subjects, date offsets, exam ids."""
    return _secret(os.environ[EnvVar.PSEUDONYM_SECRET_ARN])


def pseudonyms() -> Pseudonyms:
    """The derivations under the pseudonym secret (read once per container)."""
    return Pseudonyms(pseudonym_secret())
