"""`voxelpipe reprocess`, `attempts` and `batch`: what they send, and `batch --watch`'s progress."""

from __future__ import annotations

import argparse
from typing import Any

import pytest

from infra.cli import reprocess as cli


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    commands = parser.add_subparsers(dest="command")

    def connection(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--json", action="store_true")

    cli.add_reprocess_commands(commands, connection)
    return parser.parse_args(argv)


class FakeClient:
    def __init__(self, views: list[dict[str, Any]] | None = None) -> None:
        self.sent: list[tuple[str, Any]] = []
        self.views = views or []

    def reprocess(self, study_id: str, body: dict[str, Any]) -> dict[str, Any]:
        self.sent.append((study_id, body))
        return {
            "study_id": study_id,
            "attempt": 2,
            "status": "QUEUED",
            "analyses": body.get("analyses", ["qc"]),
        }

    def create_batch(self, body: dict[str, Any]) -> dict[str, Any]:
        self.sent.append(("batch", body))
        return {"batch_id": "b1", **self.views[0]}

    def batch(self, batch_id: str) -> dict[str, Any]:
        return {"batch_id": batch_id, **self.views.pop(0)}


def _progress(completed: int, done: bool = False) -> dict[str, Any]:
    return {
        "progress": {
            "selected": 2,
            "completed": completed,
            "in_flight": 2 - completed,
            "waiting": 0,
            "failed": 0,
            "rejected": 0,
            "skipped": 0,
            "done": done,
        }
    }


def test_reprocess_sends_the_analyses_parameters_and_priority(capsys: pytest.CaptureFixture[str]):
    client = FakeClient()
    args = _parse(
        [
            "reprocess",
            "s1",
            "--analyses",
            "qc, regional",
            "--parameters",
            '{"regional": {}}',
            "--priority",
            "low",
        ]
    )
    assert cli.run_reprocess(args, client) == 0
    assert client.sent == [
        ("s1", {"analyses": ["qc", "regional"], "parameters": {"regional": {}}, "priority": "low"})
    ]
    assert "attempt 2" in capsys.readouterr().out
    assert cli.run_reprocess(_parse(["reprocess", "s1", "--parameters", "{nope"]), client) == 2


def test_batch_create_sends_the_query_and_watches_progress(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(cli, "WATCH_INTERVAL_S", 0)
    client = FakeClient([_progress(0), _progress(0), _progress(1), _progress(2, done=True)])
    argv = ["batch", "create", "--where", "status=COMPLETED", "--where", "without_analysis=regional"]
    args = _parse([*argv, "--analyses", "regional", "--max-in-flight", "3", "--watch"])
    assert cli.run_reprocess(args, client) == 0
    assert client.sent == [
        (
            "batch",
            {
                "analyses": ["regional"],
                "where": {"status": "COMPLETED", "without_analysis": "regional"},
                "max_in_flight": 3,
            },
        )
    ]
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[1].split(",")[0].strip() for line in lines] == [
        "0/2 completed",
        "1/2 completed",
        "2/2 completed",
    ]
    assert lines[-1].endswith("done")
    assert cli.run_reprocess(_parse(["batch", "create", "--where", "nothing"]), client) == 2
