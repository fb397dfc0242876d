"""Sign-in beyond Cognito passwords (docs/security.md, "Identity"): the hosted UI's domain, the
identity providers (SAML 2.0, OIDC) a deployment's context names, and the app client's OAuth
settings; the pre-token-generation trigger gives federated users their tenant and roles
(voxelpipe.federation).

Nothing here is made without context: a deployment with neither providers nor a domain has the
user pool and app client of infra/api.py exactly as they were.
"""

from __future__ import annotations

from pathlib import Path

from aws_cdk import CfnOutput, SecretValue, Stack
from aws_cdk import aws_certificatemanager as acm
from aws_cdk import aws_cognito as cognito
from aws_cdk import aws_lambda as lambda_
from constructs import Construct

from infra.identity_settings import IdentitySettings, OidcProvider, SamlProvider
from voxelpipe.federation import IDP_GROUPS_ATTRIBUTE, IDP_GROUPS_ATTRIBUTE_NAME, providers_to_env
from voxelpipe.wiring import EnvVar

# What the hosted UI asks of a signed-in person: who they are (the ID token the API takes). Never
# aws.cognito.signin.user.admin: with it, a federated user's access token could rewrite their own
# custom:idp_groups (which the app client must be able to write, for attribute mapping) and so
# grant themselves roles.
OAUTH_SCOPES = ("openid", "email", "profile")
SELF_SERVICE_SCOPE = "aws.cognito.signin.user.admin"
# What the app client writes: the mapped attributes (Cognito writes them through it at each
# federated sign-in), nothing else.
FEDERATED_WRITE_ATTRIBUTES = ("email", IDP_GROUPS_ATTRIBUTE)


class Federation(Construct):
    """The hosted UI domain, the identity providers and the app client's OAuth settings."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        settings: IdentitySettings,
        user_pool: cognito.UserPool,
        client: cognito.UserPoolClient,
        trigger: lambda_.Function | None,
        root: Path,
    ) -> None:
        super().__init__(scope, construct_id)
        self.domain: cognito.UserPoolDomain | None = None
        self.providers: list[cognito.IUserPoolIdentityProvider] = []
        if settings.domain is not None:
            self.domain = self._domain(user_pool, settings)
        for provider in settings.providers:
            self.providers.append(self._provider(user_pool, provider, root))
        if trigger is not None:
            trigger.add_environment(EnvVar.FEDERATED_PROVIDERS, providers_to_env(settings.provider_claims()))
            user_pool.add_trigger(cognito.UserPoolOperation.PRE_TOKEN_GENERATION, trigger)
        if settings.oauth:
            self._oauth_client(client, settings)
        if settings.federated:
            cfn = client.node.default_child
            assert isinstance(cfn, cognito.CfnUserPoolClient)
            cfn.write_attributes = list(FEDERATED_WRITE_ATTRIBUTES)

    def _domain(self, user_pool: cognito.UserPool, settings: IdentitySettings) -> cognito.UserPoolDomain:
        spec = settings.domain
        assert spec is not None
        if spec.prefix is not None:
            domain = user_pool.add_domain(
                "HostedUi", cognito_domain=cognito.CognitoDomainOptions(domain_prefix=spec.prefix)
            )
            host = f"{spec.prefix}.auth.{Stack.of(self).region}.amazoncognito.com"
        else:
            assert spec.name is not None and spec.certificate_arn is not None
            domain = user_pool.add_domain(
                "HostedUi",
                custom_domain=cognito.CustomDomainOptions(
                    domain_name=spec.name,
                    certificate=acm.Certificate.from_certificate_arn(
                        self, "Certificate", spec.certificate_arn
                    ),
                ),
            )
            # Point the name at the domain's CloudFront distribution (docs/security.md; CDK's
            # cloud_front_endpoint would add a custom-resource Lambda just to read it).
            host = spec.name
        # What an operator registers at the IdP (docs/security.md, "Federation").
        CfnOutput(self, "HostedUiUrl", value=f"https://{host}")
        CfnOutput(self, "SamlEntityId", value=f"urn:amazon:cognito:sp:{user_pool.user_pool_id}")
        CfnOutput(self, "SamlAcsUrl", value=f"https://{host}/saml2/idpresponse")
        CfnOutput(self, "OidcRedirectUri", value=f"https://{host}/oauth2/idpresponse")
        return domain

    def _provider(
        self, user_pool: cognito.UserPool, provider: SamlProvider | OidcProvider, root: Path
    ) -> cognito.IUserPoolIdentityProvider:
        custom = (
            {IDP_GROUPS_ATTRIBUTE_NAME: cognito.ProviderAttribute.other(provider.groups_attribute)}
            if provider.groups_attribute
            else None
        )
        mapping = cognito.AttributeMapping(
            email=cognito.ProviderAttribute.other(provider.email_attribute), custom=custom
        )
        construct_id = f"{provider.type.capitalize()}{provider.name}"
        identifiers = list(provider.identifiers) or None
        if isinstance(provider, SamlProvider):
            metadata = (
                cognito.UserPoolIdentityProviderSamlMetadata.url(provider.metadata_url)
                if provider.metadata_url is not None
                else cognito.UserPoolIdentityProviderSamlMetadata.file(provider.metadata_content(root))
            )
            return cognito.UserPoolIdentityProviderSaml(
                self,
                construct_id,
                user_pool=user_pool,
                name=provider.name,
                metadata=metadata,
                identifiers=identifiers,
                attribute_mapping=mapping,
                idp_signout=False,
                # Sign-in starts at the hosted UI (SP-initiated): an IdP-initiated response has no
                # request to be matched against, so it is refused.
                idp_initiated=False,
            )
        # A CloudFormation dynamic reference, `{{resolve:secretsmanager:ARN:SecretString:FIELD::}}`:
        # the template and the cloud assembly hold the secret's ARN; CloudFormation reads the value
        # at deploy time and hands it to Cognito (docs/security.md, "The client secret").
        secret = SecretValue.secrets_manager(
            provider.client_secret_arn, json_field=provider.client_secret_field
        )
        return cognito.UserPoolIdentityProviderOidc(
            self,
            construct_id,
            user_pool=user_pool,
            name=provider.name,
            client_id=provider.client_id,
            client_secret=secret.unsafe_unwrap(),
            issuer_url=provider.issuer,
            scopes=list(provider.scopes),
            attribute_request_method=cognito.OidcAttributeRequestMethod.GET,
            identifiers=identifiers,
            attribute_mapping=mapping,
        )

    def _oauth_client(self, client: cognito.UserPoolClient, settings: IdentitySettings) -> None:
        """The app client signs people in through the hosted UI: the authorization code flow only
        (the implicit flow would put tokens in URLs), to the configured callback URLs and the CLI's."""
        cfn = client.node.default_child
        assert isinstance(cfn, cognito.CfnUserPoolClient)
        cfn.allowed_o_auth_flows_user_pool_client = True
        cfn.allowed_o_auth_flows = ["code"]
        cfn.allowed_o_auth_scopes = list(OAUTH_SCOPES)
        cfn.callback_ur_ls = list(settings.all_callback_urls)
        cfn.logout_ur_ls = list(settings.logout_urls) or None
        cfn.supported_identity_providers = ["COGNITO", *(provider.name for provider in settings.providers)]
        for provider in self.providers:
            client.node.add_dependency(provider)
