"""Federated sign-in (docs/security.md, "Federation"): the tenant and roles of a user who signs in
through a hospital's identity provider (SAML 2.0 or OIDC) instead of a Cognito password.

Cognito keeps such a user as `<provider>_<id>`, with the IdP attributes the provider maps. Two
claims the API needs cannot come from attribute mapping alone:

- `custom:tenant` is immutable (an administrator sets it when creating a user) and Cognito refuses
  to map onto an immutable attribute; more to the point, the tenant must not be whatever the IdP
  asserts, or one hospital's IdP administrator could name another hospital's tenant. So the
  tenant belongs to the provider, set by the deployment (CDK context), never by the IdP.
- `cognito:groups` (the roles) cannot be mapped from an IdP attribute at all. The provider maps
  its groups attribute onto `custom:idp_groups` (`IDP_GROUPS_ATTRIBUTE`), and the deployment maps
  IdP group values onto voxelpipe roles (`ProviderClaims.roles`).

The pre-token-generation trigger (functions/token_claims) applies both to every token Cognito
issues a federated user (sign-in and refresh: a role removed in the IdP is gone at the next sign-in
or refresh). Native Cognito users' tokens are left exactly as they were.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

TENANT_CLAIM = "custom:tenant"
# The user-pool attribute every provider maps its groups attribute (claim) onto; mutable, as
# Cognito rewrites mapped attributes at each sign-in. Cognito caps an attribute at 2,048 characters.
IDP_GROUPS_ATTRIBUTE_NAME = "idp_groups"
IDP_GROUPS_ATTRIBUTE = f"custom:{IDP_GROUPS_ATTRIBUTE_NAME}"
IDP_GROUPS_MAX_LENGTH = 2048
# Cognito's own: the JSON list of the IdPs a user signed in with, and the federated user's status.
IDENTITIES_ATTRIBUTE = "identities"
USER_STATUS_ATTRIBUTE = "cognito:user_status"
EXTERNAL_PROVIDER = "EXTERNAL_PROVIDER"


@dataclass(frozen=True)
class ProviderClaims:
    """What one identity provider's users get: its tenant, and IdP group value -> voxelpipe role."""

    tenant: str
    roles: Mapping[str, str] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {"tenant": self.tenant, "roles": dict(self.roles)}


@dataclass(frozen=True)
class TokenOverrides:
    """What the trigger changes in a token: claims to set, and the groups (None: leave them)."""

    claims: dict[str, str]
    groups: list[str] | None


UNCHANGED = TokenOverrides(claims={}, groups=None)


def providers_to_env(providers: Mapping[str, ProviderClaims]) -> str:
    """The trigger's environment value (EnvVar.FEDERATED_PROVIDERS): provider name -> its claims."""
    return json.dumps({name: claims.as_json() for name, claims in providers.items()}, sort_keys=True)


def providers_from_env(value: str) -> dict[str, ProviderClaims]:
    raw = json.loads(value or "{}")
    if not isinstance(raw, dict):
        raise ValueError("the federated providers are a JSON object: provider name -> {tenant, roles}")
    return {
        str(name): ProviderClaims(tenant=str(entry["tenant"]), roles=dict(entry.get("roles") or {}))
        for name, entry in raw.items()
    }


def idp_groups(value: str | None) -> list[str]:
    """The IdP's group values as Cognito stores a mapped multi-valued attribute: a JSON list
    (`["a","b"]`, from OIDC claims), `[a, b]` (SAML attributes with several values) or one value."""
    text = (value or "").strip()
    if not text:
        return []
    if text.startswith("["):
        try:
            parsed = json.loads(text)
        except json.JSONDecodeError:
            parsed = text[1:].removesuffix("]").split(",")
        if isinstance(parsed, list):
            return [str(item).strip() for item in parsed if str(item).strip()]
    return [text]


def signed_in_with(user_attributes: Mapping[str, str]) -> str | None:
    """The identity provider a federated user signed in with; None for a native Cognito user."""
    if user_attributes.get(USER_STATUS_ATTRIBUTE) != EXTERNAL_PROVIDER:
        return None
    try:
        identities = json.loads(user_attributes.get(IDENTITIES_ATTRIBUTE) or "[]")
    except json.JSONDecodeError:
        return None
    if not isinstance(identities, list):
        return None
    names = [entry.get("providerName") for entry in identities if isinstance(entry, dict)]
    primary = [
        entry.get("providerName") for entry in identities if isinstance(entry, dict) and entry.get("primary")
    ]
    found = (primary or names or [None])[0]
    return found if isinstance(found, str) and found else None


def token_overrides(
    user_attributes: Mapping[str, str],
    assigned_groups: Sequence[str],
    providers: Mapping[str, ProviderClaims],
) -> TokenOverrides:
    """The tenant and roles of a federated user's token.

    The tenant is the provider's. The groups are the ones an administrator assigned in Cognito
    (kept: an administrator may grant a role by hand) plus the voxelpipe roles the provider's
    mapping gives the user's IdP groups. A user of a provider the deployment no longer knows gets
    no tenant claim, so the API refuses them (403). Native users: unchanged.
    """
    provider = signed_in_with(user_attributes)
    if provider is None:
        return UNCHANGED
    claims = providers.get(provider)
    if claims is None:
        return TokenOverrides(claims={}, groups=list(assigned_groups))
    values = idp_groups(user_attributes.get(IDP_GROUPS_ATTRIBUTE))
    mapped = [claims.roles[value] for value in values if value in claims.roles]
    groups = list(dict.fromkeys([*assigned_groups, *mapped]))
    return TokenOverrides(claims={TENANT_CLAIM: claims.tenant}, groups=groups)
