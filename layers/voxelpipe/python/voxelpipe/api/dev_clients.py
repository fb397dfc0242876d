"""Machine clients' credentials under `voxelpipe serve` (the ClientIssuer port, development mode).

A client id is random; its secret is derived from it with the local signing secret (HMAC), so the
development issuer checks a secret without anyone storing it, as Cognito keeps its own.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

from voxelpipe.api.auth import dev_secret
from voxelpipe.machine_clients import Scope
from voxelpipe.ports import IssuedClient

DEV_CLIENT_PREFIX = "dev"


def dev_client_secret(client_id: str) -> str:
    digest = hmac.new(dev_secret(create=True).encode(), f"client:{client_id}".encode(), hashlib.sha256)
    return base64.urlsafe_b64encode(digest.digest()).decode().rstrip("=")


def dev_client_secret_matches(client_id: str, secret: str) -> bool:
    return hmac.compare_digest(dev_client_secret(client_id), secret)


class DevClientIssuer:
    def create(self, tenant: str, name: str, scopes: frozenset[Scope]) -> IssuedClient:
        client_id = f"{DEV_CLIENT_PREFIX}{secrets.token_hex(12)}"
        return IssuedClient(client_id=client_id, client_secret=dev_client_secret(client_id))

    def delete(self, client_id: str) -> None:
        """Nothing to delete: the secret was never kept (deleting the client's record revokes it)."""
