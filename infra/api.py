"""The public face: API Gateway (REST) in front of the API function, with Cognito sign-in.

Hardened: a WAF web ACL (AWS managed rules and a per-address rate limit) on the stage, access and
execution logs in KMS-encrypted log groups, X-Ray tracing, throttling, and a request validator.
"""

from __future__ import annotations

from typing import Any

from aws_cdk import ArnFormat, Aws, CfnOutput, Duration, Fn, RemovalPolicy, Stack
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_cognito as cognito
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_wafv2 as wafv2
from constructs import Construct

from infra import nag
from infra.private_api import PrivateEndpoints
from infra.security import StackSecurity
from voxelpipe.api.app import CORS_HEADERS, CORS_MAX_AGE_S, CORS_METHODS
from voxelpipe.api.auth import MACHINE_PREFIX, Role
from voxelpipe.api.routes.dicomweb import BINARY_MEDIA_TYPES
from voxelpipe.federation import IDP_GROUPS_ATTRIBUTE_NAME, IDP_GROUPS_MAX_LENGTH
from voxelpipe.function_specs import EXPORT_PATHS
from voxelpipe.machine_clients import RESOURCE_SERVER, Scope
from voxelpipe.measure_tables import TableFormat

# Routes anyone may call: health checks and the API's own documentation.
PUBLIC_PATHS = ("health", "docs", "openapi.json")
THROTTLE_RATE = 50  # requests per second, steady
THROTTLE_BURST = 100
STAGE_NAME = "v1"
# WAF: requests per 5 minutes from one address before it is blocked for a while.
WAF_RATE_LIMIT = 2000
# AWS managed rule groups the web ACL runs (https://docs.aws.amazon.com/waf/latest/developerguide/aws-managed-rule-groups-list.html).
# The groups whose rules read request bodies: STOW-RS requests skip them (ApiGateway._not_stow).
WAF_BODY_RULE_GROUPS = ("AWSManagedRulesCommonRuleSet",)
WAF_MANAGED_RULE_GROUPS = (
    "AWSManagedRulesCommonRuleSet",
    "AWSManagedRulesKnownBadInputsRuleSet",
    "AWSManagedRulesAmazonIpReputationList",
)


class StudyApi(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        handler: lambda_.IFunction,
        export_handler: lambda_.IFunction,
        security: StackSecurity,
        cors_allowed_origins: tuple[str, ...] = (),
        private: PrivateEndpoints | None = None,
    ) -> None:
        """`private`: the API is reachable only through `private`'s execute-api endpoint
        (infra/private_api.py)."""
        super().__init__(scope, construct_id)
        # Tenant is a custom attribute set by an administrator; roles are Cognito groups.
        # idp_groups: a federated user's IdP groups (infra/identity.py), rewritten at each of their
        # sign-ins (so mutable), read only by the pre-token-generation trigger. Declared in every
        # deployment: a pool's custom attributes can be added but never removed, so one that came
        # and went with the identity providers would fail the deployment that removes the last one.
        self.user_pool = cognito.UserPool(
            self,
            "Users",
            self_sign_up_enabled=False,
            sign_in_aliases=cognito.SignInAliases(email=True),
            custom_attributes={
                "tenant": cognito.StringAttribute(min_len=1, max_len=63, mutable=False),
                IDP_GROUPS_ATTRIBUTE_NAME: cognito.StringAttribute(
                    min_len=0, max_len=IDP_GROUPS_MAX_LENGTH, mutable=True
                ),
            },
            password_policy=cognito.PasswordPolicy(
                min_length=12,
                require_symbols=True,
                require_digits=True,
                require_lowercase=True,
                require_uppercase=True,
            ),
            mfa=cognito.Mfa.OPTIONAL,
            # An authenticator app only: SMS would need an SNS role and carries codes in clear text.
            mfa_second_factor=cognito.MfaSecondFactor(otp=True, sms=False),
            removal_policy=RemovalPolicy.RETAIN,
        )
        nag.acknowledge(self.user_pool, *nag.USER_POOL)
        for role in Role:
            cognito.CfnUserPoolGroup(
                self,
                f"{role.value.capitalize()}Group",
                user_pool_id=self.user_pool.user_pool_id,
                group_name=role.value,
            )
        # Machine clients' scopes (docs/security.md): "voxelpipe/<scope>", one per kind of route.
        self.resource_server = self.user_pool.add_resource_server(
            "Scopes",
            identifier=RESOURCE_SERVER,
            scopes=[
                cognito.ResourceServerScope(
                    scope_name=scope.value, scope_description=f"voxelpipe {scope.value}"
                )
                for scope in Scope
            ],
        )
        self.client = self.user_pool.add_client(
            "CliClient",
            # SRP for SDKs; the password flow (over TLS) lets the AWS CLI get a token (docs/deploy.md).
            auth_flows=cognito.AuthFlow(user_srp=True, user_password=True),
            generate_secret=False,
            read_attributes=cognito.ClientAttributes()
            .with_standard_attributes(email=True)
            .with_custom_attributes("tenant"),
        )
        # What an operator needs to create users and get tokens (docs/deploy.md).
        CfnOutput(self, "UserPoolId", value=self.user_pool.user_pool_id)
        CfnOutput(self, "UserPoolClientId", value=self.client.user_pool_client_id)
        authorizer = apigw.CognitoUserPoolsAuthorizer(self, "Authorizer", cognito_user_pools=[self.user_pool])
        # Every method needs a signed-in user, but for the public paths below.
        self.rest_api = apigw.LambdaRestApi(
            self,
            "Rest",
            handler=handler,
            proxy=False,
            # DICOMweb's bodies (STOW-RS requests, WADO-RS answers) pass base64-encoded, unchanged.
            # So are Parquet exports (answered base64-encoded by the export function).
            binary_media_types=[*BINARY_MEDIA_TYPES, TableFormat.PARQUET.media_type],
            # A browser's preflight (OPTIONS) is answered by API Gateway itself, without the Cognito
            # authorizer, for the allowed origins only; the API function adds the same headers to
            # real answers (CORSMiddleware, from VOXELPIPE_CORS_ALLOWED_ORIGINS).
            default_cors_preflight_options=apigw.CorsOptions(
                allow_origins=list(cors_allowed_origins),
                allow_methods=[*CORS_METHODS, "OPTIONS"],
                allow_headers=list(CORS_HEADERS),
                max_age=Duration.seconds(CORS_MAX_AGE_S),
            )
            if cors_allowed_origins
            else None,
            # The account-wide role that lets API Gateway write execution logs to CloudWatch.
            cloud_watch_role=True,
            # Private: reachable through the interface endpoint only (its resource policy says so).
            endpoint_configuration=apigw.EndpointConfiguration(
                types=[apigw.EndpointType.PRIVATE], vpc_endpoints=[private.execute_api]
            )
            if private is not None
            else None,
            policy=private.api_policy() if private is not None else None,
            default_method_options=apigw.MethodOptions(
                authorizer=authorizer, authorization_type=apigw.AuthorizationType.COGNITO
            ),
            deploy_options=apigw.StageOptions(
                stage_name=STAGE_NAME,
                throttling_rate_limit=THROTTLE_RATE,
                throttling_burst_limit=THROTTLE_BURST,
                tracing_enabled=True,
                access_log_destination=apigw.LogGroupLogDestination(security.log_group(self, "AccessLogs")),
                access_log_format=apigw.AccessLogFormat.json_with_standard_fields(
                    caller=False,
                    http_method=True,
                    ip=True,
                    protocol=True,
                    request_time=True,
                    resource_path=True,
                    response_length=True,
                    status=True,
                    user=True,
                ),
                # Errors only, and never request or response bodies (they may name patients).
                logging_level=apigw.MethodLoggingLevel.ERROR,
                data_trace_enabled=False,
                metrics_enabled=True,
            ),
        )
        # API Gateway writes execution logs to this name; made here, it is encrypted and expires.
        execution_logs = security.log_group(
            self,
            "ExecutionLogs",
            name=Fn.join("", ["API-Gateway-Execution-Logs_", self.rest_api.rest_api_id, f"/{STAGE_NAME}"]),
        )
        self.rest_api.deployment_stage.node.add_dependency(execution_logs)
        nag.acknowledge(self.rest_api, *nag.REST_API)
        if private is not None:
            # The stage's own URL does not resolve outside the VPC's private DNS: this one does.
            CfnOutput(self, "PrivateUrl", value=private.api_url(self.rest_api.rest_api_id, STAGE_NAME))
        # Bodies and parameters are checked before the function runs (FastAPI checks the schema).
        validator = self.rest_api.add_request_validator(
            "Validator", validate_request_body=True, validate_request_parameters=True
        )
        proxy = self.rest_api.root.add_proxy(any_method=False)
        proxy.add_method(
            "ANY", request_validator=validator, request_parameters={"method.request.path.proxy": True}
        )
        # Cohort exports go to the export function (pyarrow: function_specs.EXPORT), with the same
        # authorizer and validator as every other path.
        for path in EXPORT_PATHS:
            self.rest_api.root.add_resource(path).add_method(
                "GET", apigw.LambdaIntegration(export_handler), request_validator=validator
            )
        # Machine clients (docs/security.md): the same routes under /machine, where the authorizer
        # takes an access token carrying one of the voxelpipe scopes (a method with authorization
        # scopes is checked against the access token; one without, against an ID token: so people
        # call outside /machine and machines under it). The app checks each route's own scope.
        machine_root = self.rest_api.root.add_resource(MACHINE_PREFIX.strip("/"))
        machine_scopes = [scope.full_name for scope in Scope]
        machine = machine_root.add_proxy(any_method=False)
        machine.add_method(
            "ANY",
            request_validator=validator,
            request_parameters={"method.request.path.proxy": True},
            authorization_scopes=machine_scopes,
        )
        # A machine's cohort export goes to the export function too (pyarrow, the 6 MB answer limit).
        for path in EXPORT_PATHS:
            machine_root.add_resource(path).add_method(
                "GET",
                apigw.LambdaIntegration(export_handler),
                request_validator=validator,
                authorization_scopes=machine_scopes,
            )
        CfnOutput(self, "MachineApiUrl", value=self.rest_api.url_for_path(MACHINE_PREFIX))
        for path in PUBLIC_PATHS:
            method = self.rest_api.root.add_resource(path).add_method(
                "GET", authorization_type=apigw.AuthorizationType.NONE, request_validator=validator
            )
            nag.acknowledge(method, *nag.PUBLIC_METHOD)
        # The viewer (docs/viewer.md): pages and NiiVue carry no data, and the app checks the link's
        # grant on its data routes, so /viewer skips the authorizer (a browser page has no user token).
        viewer = self.rest_api.root.add_resource("viewer").add_proxy(any_method=False)
        viewer_method = viewer.add_method(
            "GET",
            authorization_type=apigw.AuthorizationType.NONE,
            request_validator=validator,
            request_parameters={"method.request.path.proxy": True},
        )
        nag.acknowledge(viewer_method, *nag.VIEWER_METHOD)
        if cors_allowed_origins:
            self._cors_errors(cors_allowed_origins)
        self.web_acl = self._web_acl()
        # WAF's log group name must start with aws-waf-logs-; the Authorization header is redacted.
        waf_logs = security.log_group(self, "WafLogs", name=Fn.join("", ["aws-waf-logs-", Aws.STACK_NAME]))
        wafv2.CfnLoggingConfiguration(
            self,
            "WafLogging",
            resource_arn=self.web_acl.attr_arn,
            # WAF takes the group's ARN without the `:*` that Fn::GetAtt Arn ends with.
            log_destination_configs=[
                Stack.of(self).format_arn(
                    service="logs",
                    resource="log-group",
                    resource_name=waf_logs.log_group_name,
                    arn_format=ArnFormat.COLON_RESOURCE_NAME,
                )
            ],
            redacted_fields=[
                wafv2.CfnLoggingConfiguration.FieldToMatchProperty(single_header={"Name": "authorization"})
            ],
        )

    def _cors_errors(self, origins: tuple[str, ...]) -> None:
        """API Gateway's own error answers (the authorizer's 401/403, throttling, 5XX) carry the CORS
        headers too, so that a browser front end sees the error rather than a CORS failure; and the
        preflight methods, public by nature, are acknowledged."""
        # One origin is named; several cannot be (the header holds one), so the request's Origin is
        # echoed on errors only: they carry no data, and real answers are held to the list.
        allow_origin = f"'{origins[0]}'" if len(origins) == 1 else "method.request.header.Origin"
        headers = {"Access-Control-Allow-Origin": allow_origin, "Vary": "'Origin'"}
        for response_type in (apigw.ResponseType.DEFAULT_4_XX, apigw.ResponseType.DEFAULT_5_XX):
            self.rest_api.add_gateway_response(
                f"Cors{response_type.response_type}", type=response_type, response_headers=headers
            )
        for construct in self.rest_api.node.find_all():
            if isinstance(construct, apigw.Method) and construct.http_method == "OPTIONS":
                nag.acknowledge(construct, *nag.CORS_PREFLIGHT)

    @staticmethod
    def _not_stow() -> wafv2.CfnWebACL.StatementProperty:
        """Every request but a STOW-RS one (POST .../dicomweb/studies...): its body is binary DICOM,
        up to 4 MiB, which the common rule set's body rules (8 KB at most, text patterns) refuse."""

        def match(field: wafv2.CfnWebACL.FieldToMatchProperty, text: str, where: str) -> Any:
            return wafv2.CfnWebACL.StatementProperty(
                byte_match_statement=wafv2.CfnWebACL.ByteMatchStatementProperty(
                    field_to_match=field,
                    positional_constraint=where,
                    search_string=text,
                    text_transformations=[
                        wafv2.CfnWebACL.TextTransformationProperty(priority=0, type="NONE")
                    ],
                )
            )

        stow = wafv2.CfnWebACL.StatementProperty(
            and_statement=wafv2.CfnWebACL.AndStatementProperty(
                statements=[
                    match(wafv2.CfnWebACL.FieldToMatchProperty(method={}), "POST", "EXACTLY"),
                    match(wafv2.CfnWebACL.FieldToMatchProperty(uri_path={}), "/dicomweb/studies", "CONTAINS"),
                ]
            )
        )
        return wafv2.CfnWebACL.StatementProperty(
            not_statement=wafv2.CfnWebACL.NotStatementProperty(statement=stow)
        )

    def _web_acl(self) -> wafv2.CfnWebACL:
        def visibility(name: str) -> wafv2.CfnWebACL.VisibilityConfigProperty:
            return wafv2.CfnWebACL.VisibilityConfigProperty(
                cloud_watch_metrics_enabled=True, metric_name=name, sampled_requests_enabled=True
            )

        rules = [
            wafv2.CfnWebACL.RuleProperty(
                name=group,
                priority=priority,
                override_action=wafv2.CfnWebACL.OverrideActionProperty(none={}),
                statement=wafv2.CfnWebACL.StatementProperty(
                    managed_rule_group_statement=wafv2.CfnWebACL.ManagedRuleGroupStatementProperty(
                        vendor_name="AWS",
                        name=group,
                        scope_down_statement=self._not_stow() if group in WAF_BODY_RULE_GROUPS else None,
                    )
                ),
                visibility_config=visibility(group),
            )
            for priority, group in enumerate(WAF_MANAGED_RULE_GROUPS)
        ]
        rules.append(
            wafv2.CfnWebACL.RuleProperty(
                name="RateLimitPerAddress",
                priority=len(rules),
                action=wafv2.CfnWebACL.RuleActionProperty(block={}),
                statement=wafv2.CfnWebACL.StatementProperty(
                    rate_based_statement=wafv2.CfnWebACL.RateBasedStatementProperty(
                        limit=WAF_RATE_LIMIT, aggregate_key_type="IP"
                    )
                ),
                visibility_config=visibility("RateLimitPerAddress"),
            )
        )
        web_acl = wafv2.CfnWebACL(
            self,
            "WebAcl",
            scope="REGIONAL",
            default_action=wafv2.CfnWebACL.DefaultActionProperty(allow={}),
            visibility_config=visibility("voxelpipe-api"),
            rules=rules,
        )
        wafv2.CfnWebACLAssociation(
            self,
            "WebAclAssociation",
            resource_arn=self.rest_api.deployment_stage.stage_arn,
            web_acl_arn=web_acl.attr_arn,
        )
        return web_acl
