"""The WebSocket API's $connect authorizer: a Cognito ID token or a viewer grant in `?token=`.

A REQUEST authorizer: API Gateway passes the query string; the answer allows the connection with
the caller's identity as context (functions/live records it), or denies it.
"""

from __future__ import annotations

import time
from typing import Any

from aws_lambda_powertools.utilities.data_classes.api_gateway_authorizer_event import (
    APIGatewayAuthorizerRequestEvent,
)
from aws_lambda_powertools.utilities.typing import LambdaContext

from voxelpipe.adapters import cognito_tokens, secrets
from voxelpipe.live_auth import TOKEN_PARAMETER, LiveRefused, authorize
from voxelpipe.observability import logger, metrics, tracer
from voxelpipe.viewer_grants import grant_key


def _policy(
    effect: str, resource: str, principal: str, context: dict[str, str | int] | None = None
) -> dict[str, Any]:
    answer: dict[str, Any] = {
        "principalId": principal,
        "policyDocument": {
            "Version": "2012-10-17",
            "Statement": [{"Action": "execute-api:Invoke", "Effect": effect, "Resource": resource}],
        },
    }
    if context is not None:
        answer["context"] = context
    return answer


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    request = APIGatewayAuthorizerRequestEvent(event)
    token = (request.query_string_parameters or {}).get(TOKEN_PARAMETER)
    try:
        caller = authorize(
            token,
            user_claims=cognito_tokens.id_token_claims,
            grant_key=lambda: grant_key(secrets.webhook_secret()),
            now=time.time(),
        )
    except LiveRefused as refused:
        logger.info("live connection refused", extra={"status": refused.status, "detail": refused.detail})
        return _policy("Deny", request.method_arn, "anonymous")
    return _policy("Allow", request.method_arn, caller.subject, caller.as_context())
