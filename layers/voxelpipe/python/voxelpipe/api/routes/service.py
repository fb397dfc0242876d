"""The service itself: is it up, and which version."""

from __future__ import annotations

import os

from fastapi import APIRouter

import voxelpipe
from voxelpipe.api.dependencies import requires
from voxelpipe.wiring import EnvVar

router = APIRouter(tags=["service"])


@router.get("/health", **requires(None))
def health() -> dict[str, str]:
    """Up, its version, and where live progress is (`live_url`, a WebSocket: docs/api.md)."""
    answer = {"status": "ok", "version": voxelpipe.__version__}
    live_url = os.environ.get(EnvVar.LIVE_URL)
    if live_url:
        answer["live_url"] = live_url
    return answer
