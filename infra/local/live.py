"""Live progress under `voxelpipe serve`: the WebSocket API's local stand-in (docs/local-cloud.md).

In AWS, API Gateway holds the WebSockets: its authorizer admits a connection, the live function
records it and takes subscriptions, and the push function posts to it through the stage's
Management API (PostToConnection). Here the API process holds them: `/live` on the API port runs
the same authorization (voxelpipe.live_auth, with development tokens) and the same use cases
(voxelpipe.pipeline.live) on the same connections table, and a second endpoint answers the
Management API's calls — `POST`/`GET`/`DELETE /{stage}/@connections/{id}`, SigV4-signed with this
session's keys — which the push function reaches through the real boto3 client, run by the local
cloud from the same SQS delivery as in AWS. moto intercepts only `*.amazonaws.com` URLs, so the
client's requests to this loopback endpoint go over HTTP as they would to API Gateway.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import TypeVar

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketDisconnect

from voxelpipe.adapters import secrets as deployment_secrets
from voxelpipe.adapters.connections import DynamoConnectionStore
from voxelpipe.adapters.study_table import DynamoStudyStore
from voxelpipe.api.auth import dev_token_claims
from voxelpipe.live_auth import TOKEN_PARAMETER, LiveRefused, authorize
from voxelpipe.pipeline import live
from voxelpipe.viewer_grants import grant_key

log = logging.getLogger("voxelpipe.local.live")
T = TypeVar("T")

SERVICE = "execute-api"
SEND_TIMEOUT_S = 10
MAX_CLOCK_SKEW = timedelta(minutes=15)


@dataclass
class _Socket:
    websocket: WebSocket
    loop: asyncio.AbstractEventLoop


class LiveConnections:
    """The open WebSockets by connection id, shared by the `/live` route and the management endpoint."""

    def __init__(self) -> None:
        self._sockets: dict[str, _Socket] = {}

    def add(self, connection_id: str, websocket: WebSocket) -> None:
        self._sockets[connection_id] = _Socket(websocket, asyncio.get_running_loop())

    def remove(self, connection_id: str) -> None:
        self._sockets.pop(connection_id, None)

    def __contains__(self, connection_id: str) -> bool:
        return connection_id in self._sockets

    async def close(self, connection_id: str) -> None:
        """Close the connection (DeleteConnection), on its own event loop."""
        socket = self._sockets.pop(connection_id, None)
        if socket is not None:
            future = asyncio.run_coroutine_threadsafe(socket.websocket.close(), socket.loop)
            try:
                await asyncio.wait_for(asyncio.wrap_future(future), SEND_TIMEOUT_S)
            except Exception:  # closed meanwhile
                log.info("connection %s was closed already", connection_id)

    async def send(self, connection_id: str, data: str) -> bool:
        """Send on the connection's own event loop (the API server's); False when it is gone."""
        socket = self._sockets.get(connection_id)
        if socket is None:
            return False
        future = asyncio.run_coroutine_threadsafe(socket.websocket.send_text(data), socket.loop)
        try:
            await asyncio.wait_for(asyncio.wrap_future(future), SEND_TIMEOUT_S)
        except Exception:  # closed meanwhile: gone, as API Gateway would say
            self.remove(connection_id)
            return False
        return True


def live_route(
    connections: LiveConnections, acting: Callable[[], AbstractContextManager[None]]
) -> Callable[[WebSocket], Awaitable[None]]:
    """The `/live` WebSocket route: $connect, $default and $disconnect of the WebSocket API in one.

    `acting` holds the calls to the local cloud to the live function's role (as in AWS)."""

    async def in_role(call: Callable[[], T]) -> T:
        """Run a blocking call to the local cloud in a worker thread, as the live function."""

        def run() -> T:
            with acting():
                return call()

        return await run_in_threadpool(run)

    async def endpoint(websocket: WebSocket) -> None:
        token = websocket.query_params.get(TOKEN_PARAMETER)
        now = time.time()
        verify = partial(
            authorize,
            token,
            user_claims=dev_token_claims,
            grant_key=lambda: grant_key(deployment_secrets.webhook_secret()),
            now=now,
        )
        try:
            caller = await in_role(verify)
        except LiveRefused as refused:
            # API Gateway answers a refused handshake with 401 (no token) or 403 (denied).
            denial = {
                "message": "Unauthorized" if refused.status == 401 else "Forbidden",
                "detail": refused.detail,
            }
            await websocket.send_denial_response(JSONResponse(denial, status_code=refused.status))
            return
        connection_id = secrets.token_urlsafe(12)
        store = DynamoConnectionStore()
        await in_role(partial(live.connect, store, connection_id, caller, now))
        await websocket.accept()
        connections.add(connection_id, websocket)
        try:
            while True:
                body = await websocket.receive_text()
                answer = await in_role(
                    partial(live.handle_message, store, DynamoStudyStore(), connection_id, body)
                )
                await websocket.send_text(json.dumps(answer))
        except WebSocketDisconnect:
            pass
        finally:
            connections.remove(connection_id)
            await in_role(partial(live.disconnect, store, connection_id))

    return endpoint


def _error(status: int, code: str, message: str) -> Response:
    return JSONResponse({"message": message}, status_code=status, headers={"x-amzn-ErrorType": code})


class ManagementEndpoint:
    """The ASGI app of the local Management API: only SigV4 requests signed with `keys` are served."""

    def __init__(self, connections: LiveConnections, keys: dict[str, Credentials], region: str) -> None:
        self.connections, self.keys, self.region = connections, keys, region

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        request = Request(scope, receive)
        body = await request.body()
        response = self._check(request, body) or await self._answer(request, body)
        await response(scope, receive, send)

    def _check(self, request: Request, body: bytes) -> Response | None:
        """None when the request is signed with a known key (as IAM authenticates callers)."""
        authorization = request.headers.get("authorization", "")
        fields = dict(
            part.strip().split("=", 1) for part in authorization.partition(" ")[2].split(",") if "=" in part
        )
        credential, signed, signature = (
            fields.get(k, "") for k in ("Credential", "SignedHeaders", "Signature")
        )
        access_key, _, scope = credential.partition("/")
        credentials = self.keys.get(access_key)
        amz_date = request.headers.get("x-amz-date", "")
        if not authorization.startswith("AWS4-HMAC-SHA256 ") or credentials is None or not amz_date:
            return _error(403, "ForbiddenException", "Missing or unknown authentication token")
        try:
            at = datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
        except ValueError:
            return _error(403, "ForbiddenException", "X-Amz-Date is not a date")
        if (
            abs(datetime.now(UTC) - at) > MAX_CLOCK_SKEW
            or scope != f"{amz_date[:8]}/{self.region}/{SERVICE}/aws4_request"
        ):
            return _error(403, "InvalidSignatureException", "Signature expired or scoped elsewhere")
        headers = {name: request.headers[name] for name in signed.split(";") if name in request.headers}
        raw_path = (request.scope.get("raw_path") or request.url.path.encode()).decode("latin-1")
        url = f"{request.url.scheme}://{request.headers.get('host', '')}{raw_path}"
        if request.url.query:
            url += f"?{request.url.query}"
        signing = AWSRequest(method=request.method, url=url, data=body, headers=headers)
        signing.context["timestamp"] = amz_date
        signer = SigV4Auth(credentials, SERVICE, self.region)
        expected = signer.signature(
            signer.string_to_sign(signing, signer.canonical_request(signing)), signing
        )
        if not hmac.compare_digest(expected, signature):
            return _error(403, "InvalidSignatureException", "The request signature does not match")
        return None

    async def _answer(self, request: Request, body: bytes) -> Response:
        path = request.url.path.strip("/").split("/")
        if len(path) != 3 or path[1] != "@connections":
            return _error(404, "NotFoundException", f"no route {request.method} {request.url.path}")
        connection_id = path[2]
        if connection_id not in self.connections:
            return _error(410, "GoneException", f"connection {connection_id} is gone")
        if request.method == "POST":
            if not await self.connections.send(connection_id, body.decode()):
                return _error(410, "GoneException", f"connection {connection_id} is gone")
            return Response(status_code=200)
        if request.method == "GET":
            return JSONResponse({"connectedAt": datetime.now(UTC).isoformat(), "identity": {}})
        if request.method == "DELETE":
            await self.connections.close(connection_id)
            return Response(status_code=204)
        return _error(405, "BadRequestException", f"{request.method} is not a connection method")
