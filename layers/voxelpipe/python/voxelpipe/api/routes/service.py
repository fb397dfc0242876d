"""The service itself: is it up, and which version."""

from __future__ import annotations

import os
from typing import Any

from fastapi import APIRouter

import voxelpipe
from voxelpipe.api.dependencies import requires
from voxelpipe.live import live_url
from voxelpipe.wiring import EnvVar

router = APIRouter(tags=["service"])


@router.get("/health", **requires(None))
def health() -> dict[str, Any]:
    """Up, its version, where live progress is (`live_url`, a WebSocket: docs/api.md), and where
    to sign in (`login`: the OAuth 2.0 endpoints and the CLI's client id, for `voxelpipe login`)."""
    answer: dict[str, Any] = {"status": "ok", "version": voxelpipe.__version__}
    where = live_url()
    if where:
        answer["live_url"] = where
    base, client_id = os.environ.get(EnvVar.LOGIN_BASE_URL), os.environ.get(EnvVar.LOGIN_CLIENT_ID)
    if base and client_id:
        base = base.rstrip("/")
        answer["login"] = {
            "authorize_url": f"{base}/oauth2/authorize",
            "token_url": f"{base}/oauth2/token",
            "revoke_url": f"{base}/oauth2/revoke",
            "client_id": client_id,
        }
    return answer
