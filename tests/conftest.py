"""Shared fixtures: the synthesized template (once per session) and a fresh local cloud per test."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from infra.local.cloud import LocalCloud
from infra.local.template import cached_template


@pytest.fixture(scope="session")
def template() -> dict[str, Any]:
    return cached_template()


@pytest.fixture
def cloud(template: dict[str, Any]) -> Iterator[LocalCloud]:
    with LocalCloud(template) as local:
        yield local
