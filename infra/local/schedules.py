"""The sweeps' schedules, here: moto fires no EventBridge schedule, so a thread invokes each
function (through the local cloud, under its role) while it has work — the completion sweep while
network exams are pending, the batch sweep while bulk reprocess batches are open.

In AWS the rules run them every minute (workflow_settings.TRANSFER_SWEEP_INTERVAL_MIN,
BATCH_SWEEP_INTERVAL_MIN); here every `interval_s`, so a tenant's quiet period is honoured to the
second in tests and under `serve`, and a batch moves on within a second of a study ending.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

import boto3

from voxelpipe.function_specs import COMPLETE_TRANSFERS, REPROCESS_BATCHES

log = logging.getLogger("voxelpipe.local")

SCHEDULED_EVENT: dict[str, Any] = {
    "version": "0",
    "id": "voxelpipe-local-schedule",
    "detail-type": "Scheduled Event",
    "source": "aws.events",
    "account": "000000000000",
    "time": "1970-01-01T00:00:00Z",
    "region": "us-east-1",
    "resources": [],
    "detail": {},
}


class TransferSweep:
    """Invokes the completion sweep every `interval_s` while the transfers table has items."""

    function = COMPLETE_TRANSFERS.name

    def __init__(self, table: str, invoke: Callable[[str, Any], Any], interval_s: float = 1.0) -> None:
        self.table = table
        self.invoke = invoke
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=self.function, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _pending(self) -> bool:
        # A cheap look first: an idle cloud (every test without a network exam) invokes nothing.
        items = boto3.client("dynamodb").scan(TableName=self.table, Limit=1, Select="COUNT")
        return bool(items.get("Count"))

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                if self._pending():
                    self.invoke(self.function, SCHEDULED_EVENT)
            except Exception:  # the next tick tries again, as the schedule would
                log.exception("%s failed", self.function)


class BatchSweep(TransferSweep):
    """Invokes the batch sweep every `interval_s` while the batches table has items (an idle cloud,
    with no batch ever made, invokes nothing)."""

    function = REPROCESS_BATCHES.name
