"""`voxelpipe status STUDY --watch`: a study's changes as they happen, over the live-progress
WebSocket (docs/api.md, "Live progress"), until it ends: no polling.

It subscribes first and reads the study's status second, so a change between the two is never
missed (it may be seen twice: the status it read, then its event; repeats are shown once).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

from websockets.sync.client import ClientConnection, connect

TERMINAL = frozenset({"COMPLETED", "FAILED", "REJECTED", "DELETED"})
RECEIVE_TIMEOUT_S = 3600.0  # a step may run long; the connection itself lives up to 2 hours


class WatchError(Exception):
    """The WebSocket refused the subscription, or has no URL."""


def live_url(health: dict[str, Any]) -> str:
    url = health.get("live_url")
    if not url:
        raise WatchError("this deployment announces no live-progress WebSocket (GET /health has no live_url)")
    return str(url)


def describe(message: dict[str, Any]) -> str:
    """A line for people: one status change or one step's progress."""
    if message["type"] == "status":
        line = f"{message['at']}  status {message['status']}"
        if message.get("reason"):
            line += f" ({message['reason']})"
        if message.get("error"):
            line += f" ({message['error'].get('type')}: {message['error'].get('message')})"
        return line
    return f"{message['at']}  step {message['step']}: {message['status'].lower()} {message['progress']}%"


def _subscribe(socket: ClientConnection, study_id: str) -> list[dict[str, Any]]:
    """Subscribe; what arrived before the answer (changes already being pushed) is returned."""
    socket.send(json.dumps({"action": "subscribe", "study_id": study_id}))
    early: list[dict[str, Any]] = []
    while True:
        message = json.loads(socket.recv(timeout=30))
        if message.get("type") == "subscribed":
            return early
        if message.get("type") == "error":
            raise WatchError(f"{message.get('code')}: {message.get('detail')}")
        early.append(message)


def watch(
    url: str,
    token: str,
    study_id: str,
    current: Callable[[], dict[str, Any]],
    show: Callable[[dict[str, Any]], None],
) -> str:
    """Show each change of the study (`show` gets each status/step message) until it ends; returns
    its terminal status. `current()` reads the study (GET /studies/{id}) once subscribed."""
    shown: set[tuple[Any, ...]] = set()

    def once(message: dict[str, Any]) -> None:
        key = (
            message["type"],
            message.get("attempt"),
            message.get("step"),
            message["status"],
            message.get("progress"),
        )
        if key not in shown:
            shown.add(key)
            show(message)

    with connect(f"{url}?{urlencode({'token': token})}", open_timeout=30, max_size=2**20) as socket:
        early = _subscribe(socket, study_id)
        view = current()
        once(
            {
                "type": "status",
                "study_id": study_id,
                "attempt": view["attempt"],
                "status": view["status"],
                "at": view.get("updated_at"),
                "reason": view.get("reason"),
                "error": view.get("error"),
            }
        )
        status = view["status"]
        pending = [m for m in early if m.get("study_id") == study_id]
        while status not in TERMINAL:
            message = pending.pop(0) if pending else json.loads(socket.recv(timeout=RECEIVE_TIMEOUT_S))
            if message.get("study_id") != study_id or message.get("type") not in ("status", "step"):
                continue
            if message["type"] == "status" and message["attempt"] < view["attempt"]:
                continue  # an older attempt's, delivered late
            once(message)
            if message["type"] == "status":
                status = message["status"]
        return str(status)
