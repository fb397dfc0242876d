"""Machine clients: a tenant's integration engines calling the API without a person's password
(OAuth 2.0 client credentials, docs/security.md "Machine clients and CLI login").

A machine client is a Cognito app client with a secret, allowed the client-credentials grant and
some of the resource server's scopes; voxelpipe keeps what Cognito's access tokens do not say —
its tenant, name, scopes, creator and expiry — keyed by its client id (MachineClientRecord). The
secret is Cognito's (or, locally, derived from the development secret): never stored by us.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

# The resource server's identifier: a scope's full name, as tokens carry it, is "voxelpipe/<scope>".
RESOURCE_SERVER = "voxelpipe"
NAME_PATTERN = r"^[a-z0-9][a-z0-9-]{0,62}$"  # a client's name within its tenant
DEFAULT_VALIDITY_DAYS = 90  # a client's life when neither the request nor the deployment says
MAX_VALIDITY_DAYS = 365
ACCESS_TOKEN_MINUTES = 60  # how long one client-credentials access token lives (Cognito's default)


class Scope(StrEnum):
    """What a machine client may be allowed: each route needs one (api/auth.py SCOPE_OF)."""

    STUDIES_READ = "studies.read"  # every read: studies, results, analyses, models, QIDO/WADO-RS
    STUDIES_WRITE = "studies.write"  # create, complete, reprocess studies; redrive deliveries
    STUDIES_DELETE = "studies.delete"
    DICOMWEB_STOW = "dicomweb.stow"  # STOW-RS: store DICOM instances
    MODELS_MANAGE = "models.manage"  # the tenant's own models
    REFERENCES_MANAGE = "references.manage"  # the tenant's own atlases
    RULES_MANAGE = "rules.manage"
    DESTINATIONS_MANAGE = "destinations.manage"

    @property
    def full_name(self) -> str:
        """The scope as Cognito names it and tokens carry it."""
        return f"{RESOURCE_SERVER}/{self.value}"


def scopes_of(claim: str) -> frozenset[Scope]:
    """The voxelpipe scopes in a token's space-separated `scope` claim (others are ignored)."""
    prefix = f"{RESOURCE_SERVER}/"
    known = {scope.value for scope in Scope}
    names = (part.removeprefix(prefix) for part in claim.split() if part.startswith(prefix))
    return frozenset(Scope(name) for name in names if name in known)


def is_client_name(name: str) -> bool:
    return re.fullmatch(NAME_PATTERN, name) is not None


@dataclass(frozen=True)
class MachineClient:
    """A machine client as voxelpipe knows it (never its secret)."""

    client_id: str
    tenant: str
    name: str
    scopes: frozenset[Scope]
    created_at: datetime
    created_by: str | None
    expires_at: datetime

    def expired(self, now: datetime) -> bool:
        return now >= self.expires_at
