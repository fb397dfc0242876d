"""Sign-in and network settings from CDK context (docs/security.md, docs/deploy.md "Context").

Checked at synthesis by pydantic models: a wrong value fails `cdk synth` with a message naming the
context key and the field, before anything is deployed. No CDK import here (the unit tests check
the models without synthesizing).

- `voxelpipe:identity:providers`: identity providers people sign in with (SAML 2.0, OIDC); each
  gives its users one tenant and maps its groups onto voxelpipe roles (voxelpipe.federation).
- `voxelpipe:identity:domain`: the hosted UI's domain (a Cognito prefix, or your own name with an
  ACM certificate in us-east-1).
- `voxelpipe:identity:callbackUrls`, `voxelpipe:identity:logoutUrls`: where the hosted UI may send
  users back to after sign-in and sign-out.
- `voxelpipe:network:apiEndpoint`: "public" (default) or "private" (the REST API reachable only
  through an interface VPC endpoint, presigned URLs through an S3 interface endpoint);
  `voxelpipe:network:clientCidrs`: the networks (on premises, peered) that may reach the endpoints.
"""

from __future__ import annotations

import ipaddress
import json
import re
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic.alias_generators import to_camel

from voxelpipe.api.auth import Role
from voxelpipe.federation import ProviderClaims
from voxelpipe.keys import is_tenant
from voxelpipe.wiring import CLI_CALLBACK_URL

PROVIDERS_CONTEXT = "voxelpipe:identity:providers"
DOMAIN_CONTEXT = "voxelpipe:identity:domain"
CALLBACK_URLS_CONTEXT = "voxelpipe:identity:callbackUrls"
LOGOUT_URLS_CONTEXT = "voxelpipe:identity:logoutUrls"
API_ENDPOINT_CONTEXT = "voxelpipe:network:apiEndpoint"
CLIENT_CIDRS_CONTEXT = "voxelpipe:network:clientCidrs"

# Cognito: an IdP name is 1-32 characters; `_` would be ambiguous (federated user names are
# `<provider>_<id>`), and Cognito reserves the social providers' and its own names.
_PROVIDER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]{0,31}")
_RESERVED_PROVIDER_NAMES = frozenset({"cognito", "google", "facebook", "loginwithamazon", "signinwithapple"})
# A Cognito domain prefix: lower-case letters, digits and hyphens; Cognito refuses these words in it.
_DOMAIN_PREFIX = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_RESERVED_DOMAIN_WORDS = ("aws", "amazon", "cognito")
_SECRET_ARN = re.compile(r"arn:aws[a-z-]*:secretsmanager:[a-z0-9-]+:\d{12}:secret:[A-Za-z0-9/_+=.@-]+")
# CloudFront (which serves a custom hosted-UI domain) takes certificates from us-east-1 only.
_US_EAST_1_CERTIFICATE = re.compile(r"arn:aws[a-z-]*:acm:us-east-1:\d{12}:certificate/[0-9a-f-]+")
_DEFAULT_OIDC_SCOPES = ("openid", "email", "profile")


class _Context(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", alias_generator=to_camel, populate_by_name=True)


def _https(url: str, what: str) -> str:
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.netloc:
        raise ValueError(f"{what} must be an https:// URL, not {url!r}")
    return url


class _Provider(_Context):
    """What every identity provider has: its name in Cognito, its users' tenant, its groups."""

    name: str
    tenant: str
    # The IdP attribute (SAML) or claim (OIDC) that lists the user's groups, mapped onto
    # custom:idp_groups; None: roles come only from Cognito groups an administrator assigns.
    groups_attribute: str | None = None
    # IdP group value (a name, a path, an Entra ID object id) -> voxelpipe role.
    roles: dict[str, Role] = Field(default_factory=dict)
    # The IdP attribute or claim holding the user's e-mail address (mapped onto `email`).
    email_attribute: str = "email"
    # E-mail domains (or other identifiers) the hosted UI routes to this provider.
    identifiers: tuple[str, ...] = ()

    @field_validator("name")
    @classmethod
    def _name(cls, name: str) -> str:
        if not _PROVIDER_NAME.fullmatch(name) or name.lower() in _RESERVED_PROVIDER_NAMES:
            raise ValueError(
                f"{name!r}: a provider name is 1-32 letters, digits and '-', starting with a letter or "
                f"digit, and not one of Cognito's own ({', '.join(sorted(_RESERVED_PROVIDER_NAMES))})"
            )
        return name

    @field_validator("tenant")
    @classmethod
    def _tenant(cls, tenant: str) -> str:
        if not is_tenant(tenant):
            raise ValueError(f"{tenant!r} is not a tenant (lower-case letters, digits and '-', up to 63)")
        return tenant

    @model_validator(mode="after")
    def _roles_need_groups(self) -> _Provider:
        if self.roles and not self.groups_attribute:
            raise ValueError("roles map IdP groups: name the attribute that carries them (groupsAttribute)")
        return self

    def claims(self) -> ProviderClaims:
        return ProviderClaims(
            tenant=self.tenant, roles={group: role.value for group, role in self.roles.items()}
        )


class SamlProvider(_Provider):
    type: Literal["saml"]
    # The IdP's SAML metadata: a URL Cognito fetches (and refreshes), or a file (an XML document,
    # a path relative to the repository) whose content is put in the template.
    metadata_url: str | None = None
    metadata_file: str | None = None
    email_attribute: str = "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/emailaddress"

    @field_validator("metadata_url")
    @classmethod
    def _url(cls, url: str | None) -> str | None:
        return None if url is None else _https(url, "metadataUrl")

    @model_validator(mode="after")
    def _one_metadata(self) -> SamlProvider:
        if (self.metadata_url is None) == (self.metadata_file is None):
            raise ValueError("give the IdP's SAML metadata as exactly one of metadataUrl, metadataFile")
        return self

    def metadata_content(self, root: Path) -> str:
        """The metadata file's XML (checked to be there and to look like SAML metadata)."""
        assert self.metadata_file is not None
        path = (root / self.metadata_file).resolve()
        if not path.is_file():
            raise ValueError(f"{PROVIDERS_CONTEXT}: {self.name}'s metadataFile {path} does not exist")
        content = path.read_text()
        if "EntityDescriptor" not in content:
            raise ValueError(f"{PROVIDERS_CONTEXT}: {path} is not SAML metadata (no EntityDescriptor)")
        return content


class OidcProvider(_Provider):
    type: Literal["oidc"]
    issuer: str
    client_id: str = Field(min_length=1)
    # The client secret lives in Secrets Manager; the template holds a dynamic reference to it,
    # which CloudFormation resolves at deploy time (never the secret itself).
    client_secret_arn: str
    # The secret's JSON key holding the client secret; None: the whole secret string is it.
    client_secret_field: str | None = None
    scopes: tuple[str, ...] = _DEFAULT_OIDC_SCOPES

    @model_validator(mode="before")
    @classmethod
    def _no_plaintext_secret(cls, data: Any) -> Any:
        if isinstance(data, dict) and ("clientSecret" in data or "client_secret" in data):
            raise ValueError(
                "a client secret is never written in context: store it in Secrets Manager and give "
                "its ARN as clientSecretArn (and clientSecretField when it is a JSON key)"
            )
        return data

    @field_validator("issuer")
    @classmethod
    def _issuer(cls, issuer: str) -> str:
        return _https(issuer, "issuer")

    @field_validator("client_secret_arn")
    @classmethod
    def _secret_arn(cls, arn: str) -> str:
        if not _SECRET_ARN.fullmatch(arn):
            raise ValueError(f"{arn!r} is not a Secrets Manager secret ARN")
        return arn

    @field_validator("scopes")
    @classmethod
    def _openid(cls, scopes: tuple[str, ...]) -> tuple[str, ...]:
        if "openid" not in scopes:
            raise ValueError("OIDC scopes must include 'openid'")
        return scopes


Provider = Annotated[SamlProvider | OidcProvider, Field(discriminator="type")]


class HostedUiDomain(_Context):
    """The hosted UI's address: `https://{prefix}.auth.{region}.amazoncognito.com`, or your own
    name (`name`, with an ACM certificate for it in us-east-1, and a DNS alias you create)."""

    prefix: str | None = None
    name: str | None = None
    certificate_arn: str | None = None

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, prefix: str | None) -> str | None:
        if prefix is not None and (
            not _DOMAIN_PREFIX.fullmatch(prefix) or any(word in prefix for word in _RESERVED_DOMAIN_WORDS)
        ):
            raise ValueError(
                f"{prefix!r}: a domain prefix is lower-case letters, digits and '-' (up to 63), "
                f"without {', '.join(_RESERVED_DOMAIN_WORDS)}"
            )
        return prefix

    @model_validator(mode="after")
    def _one_kind(self) -> HostedUiDomain:
        if (self.prefix is None) == (self.name is None):
            raise ValueError("give the hosted UI's domain as either prefix or name (with certificateArn)")
        if self.name is not None:
            if self.certificate_arn is None or not _US_EAST_1_CERTIFICATE.fullmatch(self.certificate_arn):
                raise ValueError("a custom domain needs certificateArn: an ACM certificate ARN in us-east-1")
        elif self.certificate_arn is not None:
            raise ValueError("certificateArn goes with a custom domain name, not with a prefix")
        return self


class ApiEndpoint(StrEnum):
    PUBLIC = "public"
    PRIVATE = "private"


def _redirect_url(url: str) -> str:
    """A hosted-UI redirect: https, or http to the loopback address (the CLI's local callback)."""
    parts = urlsplit(url)
    if parts.scheme == "http" and parts.hostname in ("localhost", "127.0.0.1"):
        return url
    return _https(url, "a callback or logout URL (http only for localhost)")


class IdentitySettings(_Context):
    providers: tuple[Provider, ...] = ()
    domain: HostedUiDomain | None = None
    callback_urls: tuple[str, ...] = ()
    logout_urls: tuple[str, ...] = ()

    @field_validator("callback_urls", "logout_urls")
    @classmethod
    def _redirects(cls, urls: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(_redirect_url(url) for url in urls)

    @model_validator(mode="after")
    def _federation_needs_a_domain(self) -> IdentitySettings:
        names = [provider.name.lower() for provider in self.providers]
        if len(set(names)) != len(names):
            raise ValueError(f"{PROVIDERS_CONTEXT}: provider names must differ (case aside): {names}")
        if self.providers and self.domain is None:
            raise ValueError(f"identity providers need the hosted UI's domain: set {DOMAIN_CONTEXT}")
        if self.providers and not self.callback_urls:
            raise ValueError(
                f"identity providers need where to return after sign-in: set {CALLBACK_URLS_CONTEXT}"
            )
        return self

    @property
    def federated(self) -> bool:
        return bool(self.providers)

    @property
    def oauth(self) -> bool:
        """Whether the app client signs people in through the hosted UI (OAuth code flow): with a
        domain, always (`voxelpipe login` returns to CLI_CALLBACK_URL; docs/security.md)."""
        return self.domain is not None

    @property
    def all_callback_urls(self) -> tuple[str, ...]:
        """The configured callback URLs and the CLI login's loopback redirect."""
        return tuple(dict.fromkeys((*self.callback_urls, CLI_CALLBACK_URL)))

    def provider_claims(self) -> dict[str, ProviderClaims]:
        return {provider.name: provider.claims() for provider in self.providers}


class NetworkSettings(_Context):
    api_endpoint: ApiEndpoint = ApiEndpoint.PUBLIC
    # Networks besides the VPC's own that may reach the private endpoints (HTTPS), e.g. a
    # hospital's range over a VPN or Direct Connect.
    client_cidrs: tuple[str, ...] = ()

    @field_validator("client_cidrs")
    @classmethod
    def _cidrs(cls, cidrs: tuple[str, ...]) -> tuple[str, ...]:
        for cidr in cidrs:
            network = ipaddress.ip_network(cidr, strict=True)  # ValueError names the bad one
            if network.prefixlen == 0:
                raise ValueError(f"{cidr}: a private API open to every address is not private")
        return cidrs

    @model_validator(mode="after")
    def _cidrs_need_private(self) -> NetworkSettings:
        if self.client_cidrs and self.api_endpoint is not ApiEndpoint.PRIVATE:
            raise ValueError(
                f"{CLIENT_CIDRS_CONTEXT} applies to a private API ({API_ENDPOINT_CONTEXT}: private)"
            )
        return self

    @property
    def private(self) -> bool:
        return self.api_endpoint is ApiEndpoint.PRIVATE


def _from_command_line(value: Any) -> Any:
    """`cdk synth -c KEY=VALUE` passes strings: JSON (a list, an object), or a comma-separated list."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    if text.startswith(("[", "{")):
        try:
            return json.loads(text)
        except json.JSONDecodeError as error:
            raise ValueError(f"invalid context: {value!r} is not JSON ({error})") from error
    return [item.strip() for item in text.split(",") if item.strip()]


def _checked(
    model: type[BaseModel],
    values: dict[str, Any],
    keys: dict[str, str],
    scalars: frozenset[str] = frozenset(),
) -> Any:
    """`model` from the context's values; a ValidationError becomes a ValueError naming the keys."""
    given = {
        field: value if field in scalars else _from_command_line(value)
        for field, value in values.items()
        if value is not None
    }
    try:
        return model.model_validate(given)
    except ValidationError as error:
        problems = []
        for found in error.errors():
            loc = [str(part) for part in found["loc"]]
            key = keys.get(loc[0], "") if loc else ""
            where = key + "".join(f"[{part}]" if part.isdigit() else f".{part}" for part in loc[1:])
            message = str(found["msg"]).removeprefix("Value error, ")
            problems.append(f"{where or ', '.join(keys.values())}: {message}")
        raise ValueError("invalid context: " + "; ".join(problems)) from error


def identity_settings(context: Any) -> IdentitySettings:
    """The identity settings from a context lookup (`node.try_get_context`)."""
    keys = {
        "providers": PROVIDERS_CONTEXT,
        "domain": DOMAIN_CONTEXT,
        "callbackUrls": CALLBACK_URLS_CONTEXT,
        "logoutUrls": LOGOUT_URLS_CONTEXT,
    }
    values = {field: context(key) for field, key in keys.items()}
    domain = values["domain"]
    if isinstance(domain, str) and not domain.strip().startswith("{"):
        values["domain"] = {"prefix": domain.strip()}  # `-c voxelpipe:identity:domain=PREFIX`
    settings: IdentitySettings = _checked(IdentitySettings, values, keys)
    return settings


def network_settings(context: Any) -> NetworkSettings:
    keys = {"apiEndpoint": API_ENDPOINT_CONTEXT, "clientCidrs": CLIENT_CIDRS_CONTEXT}
    settings: NetworkSettings = _checked(
        NetworkSettings,
        {field: context(key) for field, key in keys.items()},
        keys,
        frozenset({"apiEndpoint"}),
    )
    return settings


__all__ = [
    "ApiEndpoint",
    "HostedUiDomain",
    "IdentitySettings",
    "NetworkSettings",
    "OidcProvider",
    "SamlProvider",
    "identity_settings",
    "network_settings",
]
