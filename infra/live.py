"""Live progress: the WebSocket API clients follow studies on, and what feeds it (docs/api.md).

API Gateway's WebSocket API routes $connect (authorized by the live_authorizer function: a
Cognito ID token or a viewer grant in `?token=`), $disconnect and $default to the live function.
Status and step events go from the study bus through a rule to an SQS queue (with a dead-letter
queue) and on to the live_push function, which posts to the connections that follow each study.
"""

from __future__ import annotations

from aws_cdk import Duration, Stack
from aws_cdk import aws_apigatewayv2 as apigwv2
from aws_cdk import aws_apigatewayv2_authorizers as authorizers
from aws_cdk import aws_apigatewayv2_integrations as integrations
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_event_sources as event_sources
from constructs import Construct

from infra import nag
from infra.security import StackSecurity, logical_id
from voxelpipe.live_auth import TOKEN_PARAMETER
from voxelpipe.wiring import EVENT_SOURCE, LIVE_STAGE, STATUS_CHANGED, STEP_CHANGED, EnvVar, Resource
from voxelpipe.workflow_settings import LIVE_BATCH_SIZE, LIVE_MAX_RECEIVE_COUNT, LIVE_VISIBILITY_TIMEOUT_S

STAGE_NAME = LIVE_STAGE
THROTTLE_RATE = 50  # messages and connections per second, steady
THROTTLE_BURST = 100


class LiveProgress(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        security: StackSecurity,
        bus: events.IEventBus,
        routes: lambda_.Function,
        authorizer: lambda_.Function,
        push: lambda_.Function,
    ) -> None:
        super().__init__(scope, construct_id)
        integration = integrations.WebSocketLambdaIntegration("Routes", routes)
        self.api = apigwv2.WebSocketApi(
            self,
            "WebSocket",
            description="voxelpipe live progress: status and step changes of a tenant's studies",
            connect_route_options=apigwv2.WebSocketRouteOptions(
                integration=integration,
                authorizer=authorizers.WebSocketLambdaAuthorizer(
                    "Authorizer",
                    authorizer,
                    identity_source=[f"route.request.querystring.{TOKEN_PARAMETER}"],
                ),
            ),
            disconnect_route_options=apigwv2.WebSocketRouteOptions(integration=integration),
            default_route_options=apigwv2.WebSocketRouteOptions(integration=integration),
        )
        self.stage = apigwv2.WebSocketStage(
            self,
            "Stage",
            web_socket_api=self.api,
            stage_name=STAGE_NAME,
            auto_deploy=True,
            throttle=apigwv2.ThrottleSettings(rate_limit=THROTTLE_RATE, burst_limit=THROTTLE_BURST),
        )
        # Access logs (no message bodies: they name studies, not patients, but stay out of logs).
        access_logs = security.log_group(self, "AccessLogs")
        stage = self.stage.node.default_child
        assert isinstance(stage, apigwv2.CfnStage)
        stage.access_log_settings = apigwv2.CfnStage.AccessLogSettingsProperty(
            destination_arn=access_logs.log_group_arn,
            format=(
                '{"requestId":"$context.requestId","ip":"$context.identity.sourceIp",'
                '"requestTime":"$context.requestTime","routeKey":"$context.routeKey",'
                '"status":"$context.status","connectionId":"$context.connectionId",'
                '"authorizerError":"$context.authorizer.error"}'
            ),
        )
        # The routes and the push post to connections through the stage's management endpoint.
        for function in (routes, push):
            function.add_environment(EnvVar.LIVE_CALLBACK_URL, self.stage.callback_url)
            self.stage.grant_management_api_access(function)
        stack = Stack.of(self)
        connections = nag.wildcard_resource(
            f"arn:<AWS::Partition>:execute-api:{nag.region_of(stack)}:{nag.account_of(stack)}:"
            f"<{logical_id(self.api)}>/{STAGE_NAME}/*/@connections/*"
        )
        for function in (routes, push):
            nag.acknowledge(function.role or function, nag.LIVE_MANAGE_CONNECTIONS, applies_to=[connections])
        nag.acknowledge(self.api, *nag.LIVE_ROUTES)

        # Status and step changes, on their way to the push function.
        self.queue = security.queue_with_dead_letters(
            scope,
            Resource.LIVE_QUEUE,
            max_receive_count=LIVE_MAX_RECEIVE_COUNT,
            visibility_timeout=Duration.seconds(LIVE_VISIBILITY_TIMEOUT_S),
            retention_period=Duration.hours(1),  # a change not shown within the hour is news no more
        )
        self.rule = events.Rule(
            scope,
            "StudyChangesToLive",
            event_bus=bus,
            event_pattern=events.EventPattern(
                source=[EVENT_SOURCE], detail_type=[STATUS_CHANGED, STEP_CHANGED]
            ),
            targets=[targets.SqsQueue(self.queue)],
        )
        push.add_event_source(
            event_sources.SqsEventSource(
                self.queue, batch_size=LIVE_BATCH_SIZE, report_batch_item_failures=True
            )
        )

    @property
    def url(self) -> str:
        """wss://{api}.execute-api.{region}.amazonaws.com/v1: where clients connect."""
        return self.stage.url
