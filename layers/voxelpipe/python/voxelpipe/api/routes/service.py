"""The service itself: is it up, and which version."""

from __future__ import annotations

from fastapi import APIRouter

import voxelpipe
from voxelpipe.api.dependencies import requires
from voxelpipe.live import live_url

router = APIRouter(tags=["service"])


@router.get("/health", **requires(None))
def health() -> dict[str, str]:
    """Up, its version, and where live progress is (`live_url`, a WebSocket: docs/api.md)."""
    answer = {"status": "ok", "version": voxelpipe.__version__}
    where = live_url()
    if where:
        answer["live_url"] = where
    return answer
