"""Shared fixtures: the synthesized template (once per session) and a fresh local cloud per test."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from infra.local.cloud import LocalCloud
from infra.local.template import cached_template
from tests.fixtures.cloud import checked_cloud
from voxelpipe.api.auth import DEV_SECRET_FILE_ENV


@pytest.fixture(scope="session")
def template() -> dict[str, Any]:
    return cached_template()


@pytest.fixture
def cloud(template: dict[str, Any]) -> Iterator[LocalCloud]:
    with checked_cloud(template) as local:
        yield local


@pytest.fixture(autouse=True)
def dev_secret_file(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Development tokens are signed with a secret of the test session, not the user's."""
    monkeypatch.setenv(DEV_SECRET_FILE_ENV, str(tmp_path_factory.getbasetemp() / "dev-token-secret"))
