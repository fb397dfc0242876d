"""The public face: API Gateway (REST) in front of the API function, with Cognito sign-in."""

from __future__ import annotations

from aws_cdk import RemovalPolicy
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_cognito as cognito
from aws_cdk import aws_lambda as lambda_
from constructs import Construct

from voxelpipe.api.auth import Role

# Routes anyone may call: health checks and the API's own documentation.
PUBLIC_PATHS = ("health", "docs", "openapi.json")
THROTTLE_RATE = 50  # requests per second, steady
THROTTLE_BURST = 100


class StudyApi(Construct):
    def __init__(self, scope: Construct, construct_id: str, *, handler: lambda_.IFunction) -> None:
        super().__init__(scope, construct_id)
        # Tenant is a custom attribute set by an administrator; roles are Cognito groups.
        self.user_pool = cognito.UserPool(
            self,
            "Users",
            self_sign_up_enabled=False,
            sign_in_aliases=cognito.SignInAliases(email=True),
            custom_attributes={"tenant": cognito.StringAttribute(min_len=1, max_len=63, mutable=False)},
            password_policy=cognito.PasswordPolicy(min_length=12, require_symbols=True),
            mfa=cognito.Mfa.OPTIONAL,
            removal_policy=RemovalPolicy.RETAIN,
        )
        for role in Role:
            cognito.CfnUserPoolGroup(
                self,
                f"{role.value.capitalize()}Group",
                user_pool_id=self.user_pool.user_pool_id,
                group_name=role.value,
            )
        self.client = self.user_pool.add_client(
            "CliClient",
            auth_flows=cognito.AuthFlow(user_srp=True),
            generate_secret=False,
            read_attributes=cognito.ClientAttributes()
            .with_standard_attributes(email=True)
            .with_custom_attributes("tenant"),
        )
        authorizer = apigw.CognitoUserPoolsAuthorizer(self, "Authorizer", cognito_user_pools=[self.user_pool])
        # Every method needs a signed-in user, but for the public paths below.
        self.rest_api = apigw.LambdaRestApi(
            self,
            "Rest",
            handler=handler,
            proxy=False,
            cloud_watch_role=False,
            default_method_options=apigw.MethodOptions(
                authorizer=authorizer, authorization_type=apigw.AuthorizationType.COGNITO
            ),
            deploy_options=apigw.StageOptions(
                stage_name="v1", throttling_rate_limit=THROTTLE_RATE, throttling_burst_limit=THROTTLE_BURST
            ),
        )
        self.rest_api.root.add_proxy(any_method=True)
        for path in PUBLIC_PATHS:
            self.rest_api.root.add_resource(path).add_method(
                "GET", authorization_type=apigw.AuthorizationType.NONE
            )
