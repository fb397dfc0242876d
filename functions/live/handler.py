"""The WebSocket API's routes: $connect records the connection (its caller verified by the
authorizer), $disconnect forgets it, $default takes subscribe/unsubscribe and answers on the
connection (docs/api.md, "Live progress")."""

from __future__ import annotations

import json
import time
from typing import Any

from aws_lambda_powertools.utilities.parser import parse
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import BaseModel, ConfigDict, Field

from voxelpipe.adapters.connections import DynamoConnectionStore, ManagementApiConnections
from voxelpipe.adapters.study_table import DynamoStudyStore
from voxelpipe.live import LiveCaller
from voxelpipe.observability import logger, metrics, tracer
from voxelpipe.pipeline import live


class RouteContext(BaseModel):
    """What the routes use of a WebSocket event's requestContext (Powertools' per-route models
    also require fields, such as headers on $connect, that no route here reads)."""

    model_config = ConfigDict(populate_by_name=True)

    route_key: str = Field(alias="routeKey")
    connection_id: str = Field(alias="connectionId")
    authorizer: dict[str, Any] | None = None  # $connect: the live_authorizer's context


class WebSocketEvent(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    request_context: RouteContext = Field(alias="requestContext")
    body: str | None = None


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    request = parse(event=event, model=WebSocketEvent)
    route = request.request_context.route_key
    connection_id = request.request_context.connection_id
    connections = DynamoConnectionStore()
    if route == "$connect":
        authorizer = request.request_context.authorizer or {}
        live.connect(connections, connection_id, LiveCaller.from_context(authorizer), time.time())
    elif route == "$disconnect":
        live.disconnect(connections, connection_id)
    else:
        answer = live.handle_message(connections, DynamoStudyStore(), connection_id, request.body)
        ManagementApiConnections().post(connection_id, json.dumps(answer).encode())
    return {"statusCode": 200}
