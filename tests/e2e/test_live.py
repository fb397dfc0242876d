"""Live progress through `voxelpipe serve`: a WebSocket client follows its tenant's studies as they
run, and `voxelpipe status --watch` prints a study's changes until it ends."""

from __future__ import annotations

import json
import os
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.sync.client import connect

from infra.cli.client import Client
from tests.fixtures.scans import mni152_at_2mm
from tests.fixtures.serve import VOXELPIPE, voxelpipe_serve
from voxelpipe.api.auth import DEV_SECRET_FILE_ENV, Role, mint_dev_token

ORIGIN = "https://viewer.example.org"
# Every status a study that completes goes through, in order.
COMPLETED_PATH = ["AWAITING_UPLOAD", "VALIDATING", "VALIDATED", "QUEUED", "RUNNING", "COMPLETED"]


@pytest.fixture(scope="module")
def secret_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.getbasetemp() / "dev-token-secret"


@pytest.fixture(scope="module")
def live_server(secret_file: Path) -> Iterator[str]:
    with voxelpipe_serve(secret_file, "--cors-origin", ORIGIN) as url:
        yield url


@pytest.fixture(autouse=True)
def tokens(secret_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(DEV_SECRET_FILE_ENV, str(secret_file))  # the server's secret


@pytest.fixture(scope="module")
def scan(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundled brain at 2 mm: these tests follow a study's progress, not its measures."""
    path = tmp_path_factory.mktemp("live") / "t1w.nii.gz"
    path.write_bytes(mni152_at_2mm())
    return path


def _run_study(client: Client, scan: Path) -> str:
    created = client.create_study([scan], analyses=["qc"])
    (target,) = created["uploads"]
    client.upload(target, scan)
    return str(created["study_id"])


def test_a_client_gets_every_change_of_its_tenants_studies_in_order_and_nothing_else(
    live_server: str, scan: Path
):
    token = mint_dev_token("lab-a", Role.VIEWER)
    url = Client(live_server, token).health()["live_url"]
    assert url.startswith("ws://")
    with connect(f"{url}?token={token}") as socket:
        socket.send(json.dumps({"action": "subscribe"}))
        assert json.loads(socket.recv(timeout=10)) == {
            "type": "subscribed",
            "study_id": None,
            "studies": ["*"],
        }
        # lab-a's study and lab-b's run at the same time.
        other: list[str] = []
        other_tenant = threading.Thread(
            target=lambda: other.append(
                _run_study(Client(live_server, mint_dev_token("lab-b", Role.UPLOADER)), scan)
            )
        )
        other_tenant.start()
        ours = _run_study(Client(live_server, mint_dev_token("lab-a", Role.UPLOADER)), scan)
        received: list[dict[str, Any]] = []
        while not any(m["type"] == "status" and m["status"] == "COMPLETED" for m in received):
            received.append(json.loads(socket.recv(timeout=120)))
        other_tenant.join(120)
        Client(live_server, mint_dev_token("lab-b", Role.VIEWER)).wait(other[0], timeout_s=120)
        # Anything of lab-b's would have been pushed by now: it ended after its last change.
        try:
            while True:
                received.append(json.loads(socket.recv(timeout=2)))
        except TimeoutError:
            pass
    assert {m["study_id"] for m in received} == {ours}
    statuses = [m for m in received if m["type"] == "status"]
    assert [m["status"] for m in statuses] == COMPLETED_PATH
    assert [m["previous"] for m in statuses] == [None, *COMPLETED_PATH[:-1]]  # none missed, none repeated
    assert [m["at"] for m in statuses] == sorted(m["at"] for m in statuses)
    steps = [(m["step"], m["status"]) for m in received if m["type"] == "step"]
    for step in ("validate", "prepare", "analysis:qc", "finalize"):
        assert steps.index((step, "RUNNING")) < steps.index((step, "SUCCEEDED")), step


def test_a_connection_without_a_valid_token_is_refused_at_the_handshake(live_server: str):
    url = Client(live_server, None).health()["live_url"]
    for query, status in (("", 401), ("?token=not-a-token", 401)):
        with pytest.raises(Exception) as refused:
            connect(f"{url}{query}", open_timeout=10)
        assert getattr(getattr(refused.value, "response", None), "status_code", None) == status


def test_status_watch_prints_each_change_and_exits_when_the_study_completes(live_server: str, scan: Path):
    uploader = Client(live_server, mint_dev_token("lab-w", Role.UPLOADER))
    created = uploader.create_study([scan], analyses=["qc"])
    env = {
        **os.environ,
        "VOXELPIPE_API_URL": live_server,
        "VOXELPIPE_TOKEN": mint_dev_token("lab-w", Role.VIEWER),
    }
    watcher = subprocess.Popen(
        [str(VOXELPIPE), "status", created["study_id"], "--watch"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert watcher.stdout is not None
    first = watcher.stdout.readline()  # the status it read once subscribed
    assert "status AWAITING_UPLOAD" in first, first
    (target,) = created["uploads"]
    uploader.upload(target, scan)
    out, err = watcher.communicate(timeout=180)
    assert watcher.returncode == 0, err
    lines = [first, *out.splitlines()]
    statuses = [line.split("status ", 1)[1].split()[0] for line in lines if "  status " in line]
    assert statuses == COMPLETED_PATH
    assert any("step analysis:qc: succeeded 100%" in line for line in lines)


def test_serve_applies_its_cors_origins(live_server: str):
    preflight = httpx.options(
        f"{live_server}/studies",
        headers={"Origin": ORIGIN, "Access-Control-Request-Method": "POST"},
    )
    assert preflight.headers.get("access-control-allow-origin") == ORIGIN
    other = httpx.get(f"{live_server}/health", headers={"Origin": "https://elsewhere.example.com"})
    assert "access-control-allow-origin" not in other.headers
    answer = httpx.get(f"{live_server}/health", headers={"Origin": ORIGIN})
    assert answer.headers["access-control-allow-origin"] == ORIGIN
