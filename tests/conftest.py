"""Fixtures every tier shares. The local cloud's (`cloud`, `template`) are the integration and
end-to-end tiers' only (their conftest files): the unit tier never imports CDK or moto."""

from __future__ import annotations

import os

import pytest

# One torch/BLAS thread per analysis, as in the local cloud and the benchmarks: tests share a
# small machine with each other and with other work, where a second thread waiting for a busy
# CPU makes torch several times slower (voxelpipe.thread_budget). Set before anything loads torch.
os.environ.setdefault("VOXELPIPE_ANALYSIS_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
# One worker process a local cloud (infra/local/processes.py, VOXELPIPE_LOCAL_PROCESSES), not one
# a CPU: the suite runs two test files at once on two cores already, and each worker process of
# each new cloud imports the handlers again (~1.4 CPU-seconds). A test that needs another number
# says so (ProcessSettings).
os.environ.setdefault("VOXELPIPE_LOCAL_PROCESSES", "1")

from voxelpipe.api.auth import DEV_SECRET_FILE_ENV


@pytest.fixture(autouse=True)
def dev_secret_file(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Development tokens are signed with a secret of the test session, not the user's."""
    monkeypatch.setenv(DEV_SECRET_FILE_ENV, str(tmp_path_factory.getbasetemp() / "dev-token-secret"))
