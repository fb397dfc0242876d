"""`voxelpipe serve` for the end-to-end tests that talk HTTP, one per module that asks."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fixtures.cloud import cloud, cloud_in_process, template
from tests.fixtures.serve import voxelpipe_serve

__all__ = ["cloud", "cloud_in_process", "multipart_server", "server", "template"]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with voxelpipe_serve(tmp_path_factory.getbasetemp() / "dev-token-secret") as url:
        yield url


@pytest.fixture(scope="module")
def multipart_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A server that sends anything over 1 MiB through a multipart upload."""
    secret = tmp_path_factory.getbasetemp() / "dev-token-secret"
    with voxelpipe_serve(secret, VOXELPIPE_MULTIPART_THRESHOLD_BYTES=str(1024**2)) as url:
        yield url
