"""The service itself: is it up, and which version."""

from __future__ import annotations

from fastapi import APIRouter

import voxelpipe
from voxelpipe.api.dependencies import requires

router = APIRouter(tags=["service"])


@router.get("/health", **requires(None))
def health() -> dict[str, str]:
    return {"status": "ok", "version": voxelpipe.__version__}
