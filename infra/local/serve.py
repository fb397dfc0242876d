"""`voxelpipe serve`: the local cloud behind a real HTTP API and a real S3 endpoint.

A moto server on one port answers S3 (presigned uploads and downloads, `aws --endpoint-url`), and
uvicorn serves the API app on another; both share the in-process local cloud, so an upload
through a presigned POST flows through ingest, dispatch and the state machine as in `demo`. The
API's requests act as the API function, held to its role's policies as every function is.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import uvicorn
from moto.server import ThreadedMotoServer
from starlette.types import ASGIApp, Receive, Scope, Send

from infra.local.cloud import LocalCloud
from voxelpipe.adapters.storage import PUBLIC_ENDPOINT_ENV
from voxelpipe.api.app import create_app
from voxelpipe.function_specs import API
from voxelpipe.wiring import EnvVar

DEFAULT_PORT = 8000


@dataclass(frozen=True)
class Endpoints:
    api: str
    s3: str


def acting_as(cloud: LocalCloud, function: str, app: ASGIApp) -> ASGIApp:
    """The app, its requests handled as `function` (the API Lambda's role holds them, as in AWS).

    Starlette runs each endpoint in a thread with a copy of the request's context, so the
    principal set here reaches its calls."""

    async def handled(scope: Scope, receive: Receive, send: Send) -> None:
        with cloud.acting_as(function):
            await app(scope, receive, send)

    return handled


@contextmanager
def serving(
    host: str = "127.0.0.1", port: int = DEFAULT_PORT, s3_port: int | None = None
) -> Iterator[Endpoints]:
    """Run the API and S3 endpoints until the block ends."""
    s3_port = s3_port or port + 1
    endpoints = Endpoints(api=f"http://{host}:{port}", s3=f"http://{host}:{s3_port}")
    overrides = {
        EnvVar.AUTH_MODE.value: "dev",
        PUBLIC_ENDPOINT_ENV: endpoints.s3,
        "POWERTOOLS_LOG_LEVEL": "WARNING",
    }
    with LocalCloud(env=overrides) as cloud:
        s3 = ThreadedMotoServer(ip_address=host, port=s3_port, verbose=False)
        s3.start()
        app = acting_as(cloud, API.name, create_app())
        api = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning"))
        thread = threading.Thread(target=api.run, name="voxelpipe-api", daemon=True)
        thread.start()
        try:
            while not api.started:
                if not thread.is_alive():
                    raise RuntimeError(f"the API could not start on {host}:{port} (is the port taken?)")
                thread.join(0.05)
            yield endpoints
        finally:
            api.should_exit = True
            thread.join(10)
            s3.stop()


def serve(host: str, port: int, s3_port: int | None) -> None:
    with serving(host, port, s3_port) as endpoints:
        print(
            f"voxelpipe API on {endpoints.api} (docs: {endpoints.api}/docs), S3 on {endpoints.s3}", flush=True
        )
        print("mint a token: voxelpipe token --tenant demo --role uploader; stop with Ctrl-C", flush=True)
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            print("stopping", file=sys.stderr)
