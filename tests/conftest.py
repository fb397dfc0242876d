"""Fixtures every tier shares. The local cloud's (`cloud`, `template`) are the integration and
end-to-end tiers' only (their conftest files): the unit tier never imports CDK or moto."""

from __future__ import annotations

import pytest

from voxelpipe.api.auth import DEV_SECRET_FILE_ENV


@pytest.fixture(autouse=True)
def dev_secret_file(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Development tokens are signed with a secret of the test session, not the user's."""
    monkeypatch.setenv(DEV_SECRET_FILE_ENV, str(tmp_path_factory.getbasetemp() / "dev-token-secret"))
