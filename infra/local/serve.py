"""`voxelpipe serve`: the local cloud behind a real HTTP API and a real S3 endpoint.

uvicorn serves the API app on one port and the S3 gateway (`infra/local/s3_gateway.py`) on
another, both on loopback unless told otherwise; both share the in-process local cloud, so an
upload through a presigned POST flows through ingest, dispatch and the state machine as in
`demo`. The S3 endpoint serves only the presigned requests the API signs — with keys made for
this session, which nobody else holds — and checks them as S3 does. The API's requests, and the
S3 requests it signed, act as the API function, held to its role's policies as every function is.
"""

from __future__ import annotations

import secrets
import sys
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, replace

import boto3
import uvicorn
from botocore.credentials import Credentials
from starlette.types import ASGIApp, Receive, Scope, Send

from infra.local.cloud import LocalCloud
from infra.local.deploy import REGION
from infra.local.dev_issuer import DEV_LOGIN_CLIENT_ID, DevIssuer
from infra.local.dicom_receiver import receiving_dicom
from infra.local.live import LiveConnections, ManagementEndpoint, live_route
from infra.local.s3_gateway import S3Gateway
from infra.settings import cdk_json_cors_origins
from voxelpipe.api.app import create_app
from voxelpipe.api.auth import MACHINE_PREFIX
from voxelpipe.dimse.settings import AeTitle
from voxelpipe.function_specs import API, EXPORT, EXPORT_PATHS, LIVE
from voxelpipe.wiring import LIVE_STAGE, EnvVar

DEFAULT_PORT = 8000
# The receiver's AE title under `serve --dicom-port` when none is given: the demo tenant's.
DEFAULT_DICOM_AE_TITLES = {"VOXELPIPE": AeTitle("demo")}
LIVE_PATH = "/live"


@dataclass(frozen=True)
class Endpoints:
    api: str
    s3: str
    live: str  # the WebSocket clients connect to (GET /health says it too)
    live_management: str  # the local Management API the push function posts to
    dicom: str | None = None  # host:port of the DICOM C-STORE receiver, when it runs


def acting_as(cloud: LocalCloud, function: str, app: ASGIApp) -> ASGIApp:
    """The app, its requests handled as `function` (the API Lambda's role holds them, as in AWS).

    Starlette runs each endpoint in a thread with a copy of the request's context, so the
    principal set here reaches its calls."""

    async def handled(scope: Scope, receive: Receive, send: Send) -> None:
        with cloud.acting_as(function):
            await app(scope, receive, send)

    return handled


def acting_by_path(cloud: LocalCloud, app: ASGIApp) -> ASGIApp:
    """The app, each request handled as the function API Gateway sends its path to: the export
    function for EXPORT_PATHS (its role holds them; under MACHINE_PREFIX too), the API function for
    the rest."""

    async def handled(scope: Scope, receive: Receive, send: Send) -> None:
        path = str(scope.get("path", ""))
        if path == MACHINE_PREFIX or path.startswith(MACHINE_PREFIX + "/"):
            path = path.removeprefix(MACHINE_PREFIX)
        first = path.strip("/").split("/", 1)[0]
        with cloud.acting_as(EXPORT.name if first in EXPORT_PATHS else API.name):
            await app(scope, receive, send)

    return handled


def session_credentials() -> Credentials:
    """Keys for one session: the presigner signs with them and the S3 gateway accepts only them, so
    no one else can forge a presigned URL or form (moto's fake keys are public)."""
    return Credentials(access_key=f"AKIA{secrets.token_hex(8).upper()}", secret_key=secrets.token_urlsafe(30))


@contextmanager
def _running(config: uvicorn.Config, name: str) -> Iterator[None]:
    """Serve `config`'s app with uvicorn in a thread until the block ends."""
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name=name, daemon=True)
    thread.start()
    try:
        while not server.started:
            if not thread.is_alive():
                where = f"{config.host}:{config.port}"
                raise RuntimeError(f"{name} could not start on {where} (is the port taken?)")
            thread.join(0.05)
        yield
    finally:
        server.should_exit = True
        thread.join(10)


@contextmanager
def serving(
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    s3_port: int | None = None,
    *,
    live_port: int | None = None,
    cors_origins: tuple[str, ...] | None = None,
    dicom_port: int | None = None,
    dicom: dict[str, AeTitle] | None = None,
) -> Iterator[Endpoints]:
    """Run the API (with its live-progress WebSocket), S3 and local Management API endpoints until
    the block ends. `cors_origins`: the REST API's allowed origins (default: cdk.json's).
    `dicom_port`: also the DICOM C-STORE receiver there (0: any free port), for the AE titles of
    `dicom` (default VOXELPIPE for the demo tenant)."""
    s3_port = s3_port or port + 1
    live_port = live_port or port + 2
    endpoints = Endpoints(
        api=f"http://{host}:{port}",
        s3=f"http://{host}:{s3_port}",
        live=f"ws://{host}:{port}{LIVE_PATH}",
        live_management=f"http://{host}:{live_port}/{LIVE_STAGE}",
    )
    origins = cdk_json_cors_origins() if cors_origins is None else cors_origins
    overrides = {
        EnvVar.AUTH_MODE.value: "dev",
        EnvVar.S3_PUBLIC_ENDPOINT.value: endpoints.s3,
        "POWERTOOLS_LOG_LEVEL": "WARNING",
        EnvVar.LIVE_URL.value: endpoints.live,
        EnvVar.LIVE_CALLBACK_URL.value: endpoints.live_management,
        EnvVar.CORS_ALLOWED_ORIGINS.value: ",".join(origins),
        # No response payload limit here: cohort exports stream (docs/api.md, GET /measures).
        EnvVar.EXPORT_INLINE_MAX_BYTES.value: "",
        # `voxelpipe login` signs in at the development issuer, on the API's own address.
        EnvVar.LOGIN_BASE_URL.value: endpoints.api,
        EnvVar.LOGIN_CLIENT_ID.value: DEV_LOGIN_CLIENT_ID,
    }
    credentials = session_credentials()
    with LocalCloud(env=overrides, credentials=credentials) as cloud:
        gateway = S3Gateway(
            keys={credentials.access_key: credentials},
            region=REGION,
            client=boto3.client("s3", region_name=REGION),
            acting=lambda: cloud.acting_as(API.name),  # the API signed it: its role holds it
        )
        s3 = uvicorn.Config(gateway, host=host, port=s3_port, log_level="warning", lifespan="off", ws="none")
        # The WebSocket API's stand-in (infra/local/live.py): its routes on the API port, acting as
        # the live function; its Management API on its own port, which the local IAM knows as the
        # stack's WebSocket API (the push function's grant names it).
        sockets = LiveConnections()
        fastapi_app = create_app()
        fastapi_app.include_router(DevIssuer().router())  # /oauth2/...: the hosted UI's stand-in
        fastapi_app.add_api_websocket_route(
            LIVE_PATH, live_route(sockets, lambda: cloud.acting_as(LIVE.name))
        )
        app = acting_by_path(cloud, fastapi_app)
        api = uvicorn.Config(app, host=host, port=port, log_level="warning")
        management = uvicorn.Config(
            ManagementEndpoint(sockets, {credentials.access_key: credentials}, REGION),
            host=host,
            port=live_port,
            log_level="warning",
            lifespan="off",
            ws="none",
        )
        cloud.iam.local_apis[f"{host}:{live_port}"] = cloud.deployment.physical_ids[
            websocket_api(cloud.template)
        ]
        with (
            _running(s3, "voxelpipe-s3"),
            _running(management, "voxelpipe-live"),
            _running(api, "voxelpipe-api"),
            ExitStack() as receivers,
        ):
            if dicom_port is not None:
                bound = receivers.enter_context(
                    receiving_dicom(cloud, dicom or DEFAULT_DICOM_AE_TITLES, host=host, port=dicom_port)
                )
                endpoints = replace(endpoints, dicom=f"{host}:{bound}")
            yield endpoints


def websocket_api(template: dict[str, object]) -> str:
    """The logical id of the stack's WebSocket API (the local IAM's name for the local stand-in)."""
    resources = template["Resources"]
    assert isinstance(resources, dict)
    (found,) = (lid for lid, r in resources.items() if r["Type"] == "AWS::ApiGatewayV2::Api")
    return str(found)


def serve(
    host: str,
    port: int,
    s3_port: int | None,
    live_port: int | None = None,
    cors_origins: tuple[str, ...] | None = None,
    *,
    dicom_port: int | None = None,
    dicom: dict[str, AeTitle] | None = None,
) -> None:
    with serving(
        host,
        port,
        s3_port,
        live_port=live_port,
        cors_origins=cors_origins,
        dicom_port=dicom_port,
        dicom=dicom,
    ) as endpoints:
        print(
            f"voxelpipe API on {endpoints.api} (docs: {endpoints.api}/docs), S3 on {endpoints.s3}, "
            f"live progress on {endpoints.live}",
            flush=True,
        )
        if endpoints.dicom is not None:
            titles = ", ".join(
                f"{title} -> {ae.tenant}" for title, ae in (dicom or DEFAULT_DICOM_AE_TITLES).items()
            )
            print(f"DICOM C-STORE receiver on {endpoints.dicom} (AE titles: {titles})", flush=True)
        print("mint a token: voxelpipe token --tenant demo --role uploader; stop with Ctrl-C", flush=True)
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            print("stopping", file=sys.stderr)
