"""The service itself: is it up, and which version."""

from __future__ import annotations

from fastapi import APIRouter

import voxelpipe

router = APIRouter(tags=["service"])


@router.get("/health")
def health() -> dict[str, str]:
    return {"status": "ok", "version": voxelpipe.__version__}
