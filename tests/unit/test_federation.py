"""Federated sign-in: the tenant and roles the pre-token-generation trigger gives a federated user
(voxelpipe.federation, functions/token_claims), and the context that configures identity
providers, the hosted UI and the network mode (infra/identity_settings.py), checked at synthesis."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from infra.identity_settings import (
    API_ENDPOINT_CONTEXT,
    CALLBACK_URLS_CONTEXT,
    CLIENT_CIDRS_CONTEXT,
    DOMAIN_CONTEXT,
    PROVIDERS_CONTEXT,
    SamlProvider,
    identity_settings,
    network_settings,
)
from voxelpipe.api.auth import GROUPS_CLAIM, TENANT_CLAIM, Role, check_claims
from voxelpipe.federation import (
    IDP_GROUPS_ATTRIBUTE,
    UNCHANGED,
    ProviderClaims,
    idp_groups,
    providers_from_env,
    providers_to_env,
    token_overrides,
)
from voxelpipe.federation import TENANT_CLAIM as FEDERATION_TENANT_CLAIM
from voxelpipe.wiring import EnvVar

ENTRA_GROUPS = "http://schemas.microsoft.com/ws/2008/06/identity/claims/groups"
PROVIDERS = {
    "entra": ProviderClaims(
        tenant="hospital-a", roles={"6f1c-uploaders": "uploader", "6f1c-admins": "admin"}
    ),
    "keycloak": ProviderClaims(tenant="hospital-b", roles={"/voxelpipe/viewers": "viewer"}),
}


def federated(provider: str, groups: str | None = None) -> dict[str, str]:
    """A federated user's attributes as Cognito hands them to the trigger."""
    identities = [{"userId": "u-1", "providerName": provider, "providerType": "SAML", "primary": "true"}]
    attributes = {
        "sub": "8f2c",
        "cognito:user_status": "EXTERNAL_PROVIDER",
        "identities": json.dumps(identities),
        "email": "alice@hospital-a.example",
    }
    if groups is not None:
        attributes[IDP_GROUPS_ATTRIBUTE] = groups
    return attributes


def test_a_federated_user_gets_the_providers_tenant_and_the_roles_its_groups_map_to():
    overrides = token_overrides(federated("entra", "[6f1c-uploaders, other-group]"), [], PROVIDERS)
    assert overrides.claims == {TENANT_CLAIM: "hospital-a"}
    assert overrides.groups == ["uploader"]
    # What the API then sees: a tenant and a role, as for a native user.
    claims = check_claims({"sub": "8f2c", TENANT_CLAIM: "hospital-a", GROUPS_CLAIM: overrides.groups})
    assert (claims.tenant, claims.role) == ("hospital-a", Role.UPLOADER)


def test_groups_an_administrator_assigned_are_kept_beside_the_mapped_ones():
    overrides = token_overrides(federated("keycloak", '["/voxelpipe/viewers"]'), ["admin"], PROVIDERS)
    assert overrides.claims == {TENANT_CLAIM: "hospital-b"}
    assert overrides.groups == ["admin", "viewer"]


def test_the_tenant_is_the_providers_whatever_the_idp_asserts():
    attributes = {**federated("entra", "6f1c-admins"), TENANT_CLAIM: "hospital-b"}
    overrides = token_overrides(attributes, [], PROVIDERS)
    assert overrides.claims[TENANT_CLAIM] == "hospital-a"
    assert overrides.groups == ["admin"]


def test_unmapped_groups_give_no_role_so_the_api_refuses_the_user():
    overrides = token_overrides(federated("entra", "[sales, finance]"), [], PROVIDERS)
    assert overrides.groups == []
    with pytest.raises(ValueError, match="names no voxelpipe role"):
        check_claims({"sub": "8f2c", **overrides.claims, GROUPS_CLAIM: overrides.groups})


def test_a_provider_the_deployment_no_longer_knows_gets_no_tenant():
    overrides = token_overrides(federated("retired-idp", "[6f1c-admins]"), ["viewer"], PROVIDERS)
    assert overrides.claims == {} and overrides.groups == ["viewer"]


def test_native_users_tokens_are_left_as_they_are():
    native = {
        "sub": "1",
        "cognito:user_status": "CONFIRMED",
        TENANT_CLAIM: "acme",
        "email": "bob@acme.example",
    }
    assert token_overrides(native, ["uploader"], PROVIDERS) is UNCHANGED
    # identities without the external status (a native user linked to an IdP) are native too.
    assert (
        token_overrides({**native, "identities": federated("entra")["identities"]}, [], PROVIDERS)
        is UNCHANGED
    )


@pytest.mark.parametrize(
    ("stored", "values"),
    [
        ('["a","b c"]', ["a", "b c"]),  # an OIDC array claim
        ("[a, b c]", ["a", "b c"]),  # a SAML attribute with several values
        ("single", ["single"]),
        ("", []),
        (None, []),
        ("[]", []),
    ],
)
def test_idp_groups_are_read_in_every_form_cognito_stores_them(stored: str | None, values: list[str]):
    assert idp_groups(stored) == values


def test_the_triggers_environment_round_trips():
    assert providers_from_env(providers_to_env(PROVIDERS)) == PROVIDERS
    assert providers_from_env("") == {}
    assert FEDERATION_TENANT_CLAIM == TENANT_CLAIM


def _lambda_context() -> Any:
    return SimpleNamespace(
        function_name="token_claims",
        memory_limit_in_mb=256,
        invoked_function_arn="arn:aws:lambda:eu-west-1:111111111111:function:token_claims",
        aws_request_id="req-1",
    )


def _trigger_event(attributes: dict[str, str], groups: list[str]) -> dict[str, Any]:
    """A pre-token-generation event (version 1) as Cognito sends it."""
    return {
        "version": "1",
        "triggerSource": "TokenGeneration_HostedAuth",
        "region": "eu-west-1",
        "userPoolId": "eu-west-1_abc",
        "userName": "entra_u-1",
        "callerContext": {"awsSdkVersion": "aws-sdk-unknown-unknown", "clientId": "client"},
        "request": {
            "userAttributes": attributes,
            "groupConfiguration": {
                "groupsToOverride": groups,
                "iamRolesToOverride": [],
                "preferredRole": None,
            },
        },
        "response": {"claimsOverrideDetails": None},
    }


def test_the_trigger_answers_cognito_with_the_overrides(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv(EnvVar.FEDERATED_PROVIDERS, providers_to_env(PROVIDERS))
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "true")
    from functions.token_claims import handler

    handler._providers.cache_clear()
    answer = handler.lambda_handler(
        _trigger_event(federated("entra", "[6f1c-uploaders]"), []), _lambda_context()
    )
    details = answer["response"]["claimsOverrideDetails"]
    assert details["claimsToAddOrOverride"] == {TENANT_CLAIM: "hospital-a"}
    assert details["groupOverrideDetails"]["groupsToOverride"] == ["uploader"]
    native = {"sub": "1", "cognito:user_status": "CONFIRMED", TENANT_CLAIM: "acme"}
    untouched = handler.lambda_handler(_trigger_event(native, ["viewer"]), _lambda_context())
    assert untouched["response"] == {"claimsOverrideDetails": None}
    # A version 2 event (the pool's trigger set to V2_0 or V3_0) gets the answer in its own shape.
    v2 = {**_trigger_event(federated("keycloak", '["/voxelpipe/viewers"]'), ["admin"]), "version": "2"}
    v2["response"] = {"claimsAndScopeOverrideDetails": None}
    answer = handler.lambda_handler(v2, _lambda_context())["response"]["claimsAndScopeOverrideDetails"]
    assert answer["idTokenGeneration"]["claimsToAddOrOverride"] == {TENANT_CLAIM: "hospital-b"}
    assert answer["groupOverrideDetails"]["groupsToOverride"] == ["admin", "viewer"]
    handler._providers.cache_clear()


# ---- The context, checked at synthesis --------------------------------------------------------

SECRET_ARN = "arn:aws:secretsmanager:eu-west-1:111111111111:secret:voxelpipe/okta-AbCdEf"
OKTA = {
    "type": "oidc",
    "name": "okta",
    "tenant": "hospital-a",
    "issuer": "https://hospital-a.okta.com",
    "clientId": "0oa1",
    "clientSecretArn": SECRET_ARN,
    "groupsAttribute": "groups",
    "roles": {"voxelpipe-uploaders": "uploader"},
}
FEDERATED = {
    PROVIDERS_CONTEXT: [OKTA],
    DOMAIN_CONTEXT: {"prefix": "hospital-a-voxelpipe"},
    CALLBACK_URLS_CONTEXT: ["https://viewer.hospital-a.example/callback", "http://localhost:8765/callback"],
}


def _error(context: dict[str, Any]) -> str:
    with pytest.raises(ValueError) as raised:
        identity_settings(context.get)
    return str(raised.value)


def test_no_context_means_no_federation_and_a_public_api():
    identity, network = identity_settings({}.get), network_settings({}.get)
    assert not identity.federated and not identity.oauth and identity.domain is None
    assert not network.private


def test_a_valid_configuration_gives_each_provider_its_claims():
    settings = identity_settings(FEDERATED.get)
    assert settings.federated and settings.oauth
    assert settings.provider_claims() == {
        "okta": ProviderClaims("hospital-a", {"voxelpipe-uploaders": "uploader"})
    }


def test_a_plaintext_client_secret_is_refused():
    message = _error({**FEDERATED, PROVIDERS_CONTEXT: [{**OKTA, "clientSecret": "hunter2"}]})
    assert "Secrets Manager" in message and "clientSecretArn" in message and "hunter2" not in message


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"tenant": "Hospital A"}, "providers[0].oidc.tenant"),
        ({"roles": {"g": "superuser"}}, "providers[0].oidc.roles.g"),
        ({"issuer": "http://hospital-a.okta.com"}, "providers[0].oidc.issuer"),
        ({"clientSecretArn": "my-secret"}, "providers[0].oidc.clientSecretArn"),
        ({"name": "okta_1"}, "providers[0].oidc.name"),
        ({"name": "Cognito"}, "providers[0].oidc.name"),
        ({"scopes": ["email"]}, "providers[0].oidc.scopes"),
        ({"groupsAttribute": None}, "groupsAttribute"),
        ({"type": "ldap"}, "providers[0]"),
    ],
)
def test_a_wrong_provider_field_fails_synthesis_naming_the_key_and_field(change: dict[str, Any], named: str):
    message = _error({**FEDERATED, PROVIDERS_CONTEXT: [{**OKTA, **change}]})
    assert f"{PROVIDERS_CONTEXT}" in message and named in message


def test_providers_need_a_domain_and_callbacks_and_distinct_names():
    assert DOMAIN_CONTEXT in _error({k: v for k, v in FEDERATED.items() if k != DOMAIN_CONTEXT})
    assert CALLBACK_URLS_CONTEXT in _error({k: v for k, v in FEDERATED.items() if k != CALLBACK_URLS_CONTEXT})
    assert "must differ" in _error({**FEDERATED, PROVIDERS_CONTEXT: [OKTA, {**OKTA, "name": "OKTA"}]})


@pytest.mark.parametrize(
    "domain",
    [
        {"prefix": "my-cognito-login"},  # a word Cognito refuses
        {"prefix": "Upper"},
        {"name": "login.hospital.example"},  # no certificate
        {
            "name": "login.hospital.example",
            "certificateArn": "arn:aws:acm:eu-west-1:111111111111:certificate/ab-12",
        },
        {"prefix": "ok", "name": "login.hospital.example"},
    ],
)
def test_a_wrong_domain_is_refused(domain: dict[str, str]):
    assert DOMAIN_CONTEXT in _error({**FEDERATED, DOMAIN_CONTEXT: domain})


def test_a_custom_domain_takes_a_us_east_1_certificate():
    certificate = "arn:aws:acm:us-east-1:111111111111:certificate/0a1b2c3d-aaaa-bbbb-cccc-1234567890ab"
    settings = identity_settings(
        {**FEDERATED, DOMAIN_CONTEXT: {"name": "login.hospital.example", "certificateArn": certificate}}.get
    )
    assert settings.domain is not None and settings.domain.name == "login.hospital.example"


def test_callbacks_are_https_but_for_the_loopback():
    message = _error({**FEDERATED, CALLBACK_URLS_CONTEXT: ["http://viewer.hospital-a.example/callback"]})
    assert CALLBACK_URLS_CONTEXT in message


def test_saml_takes_exactly_one_metadata_source_and_reads_a_file(tmp_path: Path):
    saml = {"type": "saml", "name": "entra", "tenant": "hospital-a", "groupsAttribute": ENTRA_GROUPS}
    assert "exactly one" in _error({**FEDERATED, PROVIDERS_CONTEXT: [saml]})
    both = {**saml, "metadataUrl": "https://login.example/metadata.xml", "metadataFile": "idp.xml"}
    assert "exactly one" in _error({**FEDERATED, PROVIDERS_CONTEXT: [both]})
    (tmp_path / "idp.xml").write_text('<EntityDescriptor entityID="https://sts.example/"/>')
    (tmp_path / "not.xml").write_text("<html/>")
    settings = identity_settings({**FEDERATED, PROVIDERS_CONTEXT: [{**saml, "metadataFile": "idp.xml"}]}.get)
    (provider,) = settings.providers
    assert isinstance(provider, SamlProvider)
    assert "EntityDescriptor" in provider.metadata_content(tmp_path)
    with pytest.raises(ValueError, match="not SAML metadata"):
        provider.model_copy(update={"metadata_file": "not.xml"}).metadata_content(tmp_path)
    with pytest.raises(ValueError, match="does not exist"):
        provider.model_copy(update={"metadata_file": "missing.xml"}).metadata_content(tmp_path)


def test_the_network_mode_is_checked():
    private = network_settings({API_ENDPOINT_CONTEXT: "private", CLIENT_CIDRS_CONTEXT: ["10.20.0.0/16"]}.get)
    assert private.private and private.client_cidrs == ("10.20.0.0/16",)
    for bad, named in (
        ({API_ENDPOINT_CONTEXT: "internal"}, API_ENDPOINT_CONTEXT),
        ({API_ENDPOINT_CONTEXT: "private", CLIENT_CIDRS_CONTEXT: ["0.0.0.0/0"]}, CLIENT_CIDRS_CONTEXT),
        ({API_ENDPOINT_CONTEXT: "private", CLIENT_CIDRS_CONTEXT: ["10.20.0.1/16"]}, CLIENT_CIDRS_CONTEXT),
        ({CLIENT_CIDRS_CONTEXT: ["10.20.0.0/16"]}, API_ENDPOINT_CONTEXT),
    ):
        with pytest.raises(ValueError) as raised:
            network_settings(bad.get)
        assert named in str(raised.value)


def test_command_line_context_strings_are_read_as_cdk_passes_them():
    """`cdk synth -c KEY=VALUE` gives strings: JSON, comma-separated lists, a bare domain prefix."""
    settings = identity_settings(
        {
            PROVIDERS_CONTEXT: json.dumps([OKTA]),
            DOMAIN_CONTEXT: "hospital-a-voxelpipe",
            CALLBACK_URLS_CONTEXT: "https://viewer.hospital-a.example/callback, http://localhost:8765/callback",
        }.get
    )
    assert settings.domain is not None and settings.domain.prefix == "hospital-a-voxelpipe"
    assert len(settings.callback_urls) == 2 and settings.providers[0].name == "okta"
    network = network_settings(
        {API_ENDPOINT_CONTEXT: "private", CLIENT_CIDRS_CONTEXT: "10.20.0.0/16,10.30.0.0/16"}.get
    )
    assert network.client_cidrs == ("10.20.0.0/16", "10.30.0.0/16")
    with pytest.raises(ValueError, match="is not JSON"):
        identity_settings({PROVIDERS_CONTEXT: "[{oops"}.get)
