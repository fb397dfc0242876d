"""Fault-injection soak: N studies through the local cloud while its deliveries misbehave.

    python bench/soak.py --studies N [--seed S] [--batch B] [--json]

Each study is a small NIfTI volume uploaded as a client uploads it (`infra.local.studies.submit`),
asking for `qc` (about one in eight also for a cheap analysis on the GPU runtime), B studies at a
time, whose executions run at once. Meanwhile, at random (seeded) and at random moments:

* duplicate S3 events: ingest is invoked again with the study's own notification;
* duplicate dispatches: the study's WorkItem is sent to its work queue again;
* SQS redeliveries: dispatch is invoked again with the very record it was given;
* concurrent dispatches: dispatch is invoked with that record from two threads at once;
* transient step failures: Prepare, RunAnalysis and Finalize raise `Lambda.ServiceException` (an
  error the state machine retries) before doing their work, or after it (the work done, the answer
  lost), at most twice in a row per step so that the retries succeed;
* GPU workers killed mid-task: the worker holding the study's task dies without answering (as in
  tests/e2e/test_gpu.py); its heartbeat times out and the task is sent again;
* reprocess racing with delete, and reprocess racing with reprocess, on finished studies, each
  call from its own thread acting as the API function; a reprocessed attempt's WorkItem is sent
  twice.

Then a pass of the reaper (at the real time: it acts only on what is past its deadlines), and:

* lost: uploads with no study record;
* stuck: studies not terminal after the run and the reaper pass;
* duplicate executions: executions beyond one per study attempt;
* spurious audit rows: rows one event wrote more than once (a second `registered`, `queued`,
  `rejected` or `deleted` row of a study; a second `execution_started`, `failed` or `reprocess`
  row of one attempt);
* leftovers: objects (any version, under any prefix) or task and object rows of a deleted study;
* denied calls: calls a function's role does not allow (infra/local/iam.py).

It exits 1 when any of them is not zero. The deployment is the GPU tests' (tests/fixtures/gpu.py:
3 s heartbeats, one retry a second later), so a killed worker's task comes back within seconds.
"""

from __future__ import annotations

import argparse
import gzip
import json
import logging
import os
import random
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote_plus

# The functions' own logs would drown the figures: errors only (read when the logger is made).
os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "ERROR")
# Run as `python bench/soak.py`: this repository's code (and its test fixtures) first.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "layers" / "voxelpipe" / "python"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import boto3
import nibabel as nib
import numpy as np

from infra.local.cloud import LocalCloud
from infra.local.studies import submit
from infra.local.template import cached_template
from tests.fixtures.gpu import GPU_CONTEXT
from voxelpipe import analyses, tracking
from voxelpipe.adapters.executions import StepFunctionsExecutions
from voxelpipe.adapters.identity_maps import DynamoIdentityMaps
from voxelpipe.adapters.queues import SqsWorkQueues
from voxelpipe.adapters.storage import Storage
from voxelpipe.adapters.study_table import DynamoStudyStore
from voxelpipe.analyses import Analysis, AnalysisInput, AnalysisOutput
from voxelpipe.function_specs import API, REAPER
from voxelpipe.gpu.service import default_runner
from voxelpipe.gpu.worker import OnResult, Runner
from voxelpipe.messages import AnalysisResult, AnalysisTask, WorkItem
from voxelpipe.pipeline import manage
from voxelpipe.pipeline.reconcile import Reaper
from voxelpipe.ports import StudyStore
from voxelpipe.records import StudyRecord
from voxelpipe.status import StudyStatus
from voxelpipe.wiring import Runtime, execution_name

GPU_ANALYSIS = "soak-gpu-count"
SHAPE = (16, 16, 12)
ACTOR = "soak"


class ServiceException(Exception):
    """One of the errors the state machine retries (Lambda reports an exception's class name)."""


ServiceException.__name__ = "Lambda.ServiceException"
STEPS = ("prepare", "run_analysis", "finalize")


@dataclass(frozen=True)
class Odds:
    """How often each fault is injected (per study, or per step call for transient failures)."""

    duplicate_s3_event: float = 0.3
    duplicate_dispatch: float = 0.3
    sqs_redelivery: float = 0.3
    concurrent_dispatch: float = 0.2
    gpu: float = 0.125
    kill_gpu_worker: float = 0.5  # of the GPU studies
    transient_failure: float = 0.1
    failure_after_work: float = 0.35  # of the transient failures
    reprocess_vs_delete: float = 0.1  # of the finished studies
    reprocess_vs_reprocess: float = 0.1


@dataclass
class SoakReport:
    studies: int
    lost: list[str] = field(default_factory=list)
    stuck: list[str] = field(default_factory=list)
    duplicate_executions: list[str] = field(default_factory=list)
    spurious_audit_rows: list[str] = field(default_factory=list)
    leftovers: list[str] = field(default_factory=list)
    denied_calls: list[str] = field(default_factory=list)
    statuses: dict[str, int] = field(default_factory=dict)
    failed: list[str] = field(default_factory=list)  # each FAILED study: its step and error
    not_injected: list[str] = field(default_factory=list)  # faults that found nothing to repeat
    faults: dict[str, int] = field(default_factory=dict)
    reaped: int = 0
    elapsed_s: float = 0.0
    phases_s: dict[str, float] = field(default_factory=dict)  # seconds at the end of each phase

    def problems(self) -> dict[str, list[str]]:
        """Each non-zero figure, with (up to 10 of) what it counted."""
        figures = {
            "lost": self.lost,
            "stuck": self.stuck,
            "duplicate executions": self.duplicate_executions,
            "spurious audit rows": self.spurious_audit_rows,
            "leftovers": self.leftovers,
            "denied calls": self.denied_calls,
        }
        return {name: found[:10] for name, found in figures.items() if found}

    def text(self) -> str:
        lines = [
            f"studies: {self.studies}",
            f"lost: {len(self.lost)}",
            f"stuck: {len(self.stuck)}",
            f"duplicate executions: {len(self.duplicate_executions)}",
            f"spurious audit rows: {len(self.spurious_audit_rows)}",
            f"leftovers of deleted studies: {len(self.leftovers)}",
            f"denied calls: {len(self.denied_calls)}",
            "statuses: " + ", ".join(f"{k}={v}" for k, v in sorted(self.statuses.items())),
            "faults injected: " + ", ".join(f"{k}={v}" for k, v in sorted(self.faults.items())),
            f"reaped: {self.reaped}",
            *(f"FAILED: {line}" for line in self.failed[:10]),
            *(f"not injected: {line}" for line in self.not_injected[:10]),
            f"elapsed: {self.elapsed_s:.0f} s ("
            + ", ".join(f"{phase} {at:.0f} s" for phase, at in self.phases_s.items())
            + ")",
        ]
        lines += [f"{name}: {', '.join(found)}" for name, found in self.problems().items()]
        return "\n".join(lines)

    def as_json(self) -> dict[str, Any]:
        figures: dict[str, Any] = asdict(self)
        for name in (
            "lost",
            "stuck",
            "duplicate_executions",
            "spurious_audit_rows",
            "leftovers",
            "denied_calls",
        ):
            figures[name] = len(figures[name])
        figures["problems"] = self.problems()
        return figures


def _volume() -> bytes:
    """A small int16 volume (a bright ellipsoid on faint noise), .nii.gz."""
    grids = np.meshgrid(*[np.linspace(-1.0, 1.0, n) for n in SHAPE], indexing="ij")
    inside = sum(g**2 for g in grids) < 0.6
    noise = np.random.default_rng(0).normal(0.0, 5.0, SHAPE)
    data = (np.where(inside, 800.0, 40.0) + noise).clip(0).astype(np.int16)
    image = nib.Nifti1Image(data, np.diag([1.5, 1.5, 2.0, 1.0]))  # type: ignore[no-untyped-call]
    return gzip.compress(image.to_bytes(), compresslevel=1)


def _count_voxels(inputs: AnalysisInput) -> AnalysisOutput:
    count = int(np.asanyarray(inputs.image.dataobj).size)
    return AnalysisOutput(measures={"voxels": count}, artifacts={"count.txt": str(count).encode()})


@contextmanager
def _gpu_analysis() -> Iterator[None]:
    """A cheap analysis on the GPU runtime in the catalogue, for the soak's duration."""
    analysis = Analysis(GPU_ANALYSIS, "1", Runtime.GPU, "counts voxels on a GPU worker (soak)", _count_voxels)
    analyses.CATALOGUE[GPU_ANALYSIS] = analysis
    try:
        yield
    finally:
        del analyses.CATALOGUE[GPU_ANALYSIS]


def _upload_of(event: dict[str, Any]) -> str | None:
    """The study an S3 notification (an ingest event) is about."""
    for record in event.get("Records", []):
        parts = unquote_plus(record["s3"]["object"]["key"]).split("/")
        if len(parts) > 3:
            return parts[2]
    return None


def _work_of(event: dict[str, Any]) -> tuple[str, int] | None:
    """The study attempt an SQS event (a dispatch event) carries."""
    for record in event.get("Records", []):
        item = WorkItem.model_validate_json(record["body"])
        return item.study_id, item.attempt
    return None


class Soak:
    """The faults of one run: what they hook into the local cloud, and what they did."""

    def __init__(self, cloud: LocalCloud, seed: int, odds: Odds) -> None:
        self.cloud = cloud
        self.odds = odds
        # What each study is in for, drawn in the main thread in upload order: the same for a seed.
        self.plan = random.Random(seed)
        # What happens inside the handlers and race threads (under the lock): depends on timing too.
        self.chance = random.Random(seed + 1)
        self.lock = threading.Lock()
        self.faults: Counter[str] = Counter()
        self.store: StudyStore = DynamoStudyStore()
        self.uploads: dict[str, dict[str, Any]] = {}  # study -> its ingest event
        self.work: dict[tuple[str, int], dict[str, Any]] = {}  # (study, attempt) -> its dispatch event
        self.in_a_row: Counter[tuple[str, ...]] = Counter()  # transient failures in a row per step
        self.to_kill: set[str] = set()
        self.killed: set[str] = set()
        self.not_injected: list[str] = []
        self.pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="soak-fault")

    # -- hooks -------------------------------------------------------------------------------
    def hooks(self) -> ExitStack:
        """Every hook in place (the stack undoes them)."""
        stack = ExitStack()
        stack.enter_context(self.cloud.override("ingest", self._recording(self._note_upload, "ingest")))
        stack.enter_context(self.cloud.override("dispatch", self._recording(self._note_work, "dispatch")))
        for step in STEPS:
            stack.enter_context(self.cloud.override(step, self._flaky(step, self.cloud.handler(step))))
        assert self.cloud.gpu_workers is not None, "the GPU deployment runs local workers"
        stack.enter_context(self.cloud.gpu_workers.runner(self._killing_runner))
        stack.callback(self.drain)
        return stack

    def drain(self) -> None:
        """Wait for every fault already planned to be injected."""
        self.pool.shutdown(wait=True)

    def _note_upload(self, event: dict[str, Any]) -> None:
        study_id = _upload_of(event)
        if study_id is not None:
            self.uploads.setdefault(study_id, event)

    def _note_work(self, event: dict[str, Any]) -> None:
        attempt = _work_of(event)
        if attempt is not None:
            self.work.setdefault(attempt, event)

    def _recording(self, note: Callable[[dict[str, Any]], None], function: str) -> Callable[[Any, Any], Any]:
        """`function`'s own handler, noting each event it is given (to deliver it again later)."""
        real = self.cloud.handler(function)

        def handler(event: Any, context: Any) -> Any:
            if isinstance(event, dict):
                with self.lock:
                    note(event)
            return real(event, context)

        return handler

    def _flaky(self, step: str, real: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
        def handler(event: Any, context: Any) -> Any:
            analysis = (event.get("analysis") or {}).get("name", "") if isinstance(event, dict) else ""
            key = (step, str(event.get("study_id")), str(event.get("attempt")), analysis)
            with self.lock:
                fail = self.in_a_row[key] < 2 and self.chance.random() < self.odds.transient_failure
                after = fail and self.chance.random() < self.odds.failure_after_work
                self.in_a_row[key] = self.in_a_row[key] + 1 if fail else 0
                if fail:
                    self.faults[f"transient_failure_{'after' if after else 'before'}_{step}"] += 1
            if fail and not after:
                raise ServiceException(f"soak: {step} throttled")
            result = real(event, context)
            if after:
                raise ServiceException(f"soak: {step}'s answer lost")
            return result

        return handler

    def _killing_runner(self, store: StudyStore, storage: Storage) -> Runner:
        real = default_runner(store, storage)

        def run(tasks: Sequence[AnalysisTask], on_result: OnResult) -> Sequence[AnalysisResult | Exception]:
            with self.lock:
                victims = {t.study_id for t in tasks if t.study_id in self.to_kill - self.killed}
                self.killed |= victims
                if victims:
                    self.faults["gpu_worker_killed"] += 1
            if victims:
                # The worker dies holding the messages: no answer, no more heartbeats.
                raise SystemExit("soak: GPU worker killed mid-task")
            results: Sequence[AnalysisResult | Exception] = real(tasks, on_result)
            return results

        return run

    # -- faults around one study ------------------------------------------------------------
    def upload(self, content: bytes, number: int) -> str:
        gpu = self.plan.random() < self.odds.gpu
        study_id = submit(
            self.cloud, content, f"scan{number}.nii.gz", analyses=["qc", GPU_ANALYSIS] if gpu else ["qc"]
        )
        if gpu and self.plan.random() < self.odds.kill_gpu_worker:
            with self.lock:
                self.to_kill.add(study_id)
        plan = [
            (name, self.plan.uniform(0.0, 2.5))
            for name, odds in (
                ("duplicate_s3_event", self.odds.duplicate_s3_event),
                ("duplicate_dispatch", self.odds.duplicate_dispatch),
                ("sqs_redelivery", self.odds.sqs_redelivery),
                ("concurrent_dispatch", self.odds.concurrent_dispatch),
            )
            if self.plan.random() < odds
        ]
        for name, delay in plan:
            self.pool.submit(self._later, delay, name, study_id, 1)
        return study_id

    def _later(self, delay_s: float, fault: str, study_id: str, attempt: int) -> None:
        time.sleep(delay_s)
        try:
            self.inject(fault, study_id, attempt)
        except Exception as error:  # a fault that cannot be injected is reported, not fatal
            with self.lock:
                self.not_injected.append(f"{fault} of {study_id}-{attempt}: {type(error).__name__}: {error}")

    def inject(self, fault: str, study_id: str, attempt: int) -> None:
        with self.lock:
            upload, work = self.uploads.get(study_id), self.work.get((study_id, attempt))
        if fault == "duplicate_s3_event":
            if upload is None:
                raise LookupError("no ingest event seen")
            self.cloud.invoke("ingest", upload)
        elif fault == "duplicate_dispatch":
            if work is None:
                raise LookupError("no dispatch event seen")
            with self.cloud.acting_as("ingest"):  # the sender of work items
                SqsWorkQueues().enqueue(WorkItem.model_validate_json(work["Records"][0]["body"]))
        elif fault == "sqs_redelivery":
            if work is None:
                raise LookupError("no dispatch event seen")
            record = dict(work["Records"][0])
            attributes = dict(record.get("attributes", {}))
            attributes["ApproximateReceiveCount"] = str(
                int(attributes.get("ApproximateReceiveCount", "1")) + 1
            )
            self.cloud.invoke("dispatch", {"Records": [{**record, "attributes": attributes}]})
        elif fault == "concurrent_dispatch":
            if work is None:
                raise LookupError("no dispatch event seen")
            start = threading.Barrier(2)

            def dispatch_now(event: dict[str, Any]) -> None:
                start.wait()
                self.cloud.invoke("dispatch", event)

            twins = [threading.Thread(target=dispatch_now, args=(work,)) for _ in range(2)]
            for twin in twins:
                twin.start()
            for twin in twins:
                twin.join()
        else:
            raise ValueError(f"unknown fault {fault}")
        with self.lock:
            self.faults[fault] += 1

    # -- races on finished studies ----------------------------------------------------------
    def race(self, study_ids: Sequence[str]) -> list[str]:
        """Reprocess against delete, and reprocess against reprocess, on some finished studies; the
        studies raced."""
        raced: list[str] = []
        threads: list[threading.Thread] = []
        for study_id in study_ids:
            roll = self.plan.random()
            if roll < self.odds.reprocess_vs_delete:
                race, calls = "reprocess_vs_delete", (self._reprocess, self._delete)
            elif roll < self.odds.reprocess_vs_delete + self.odds.reprocess_vs_reprocess:
                race, calls = "reprocess_vs_reprocess", (self._reprocess, self._reprocess)
            else:
                continue
            with self.lock:  # fault threads count too
                self.faults[race] += 1
            raced.append(study_id)
            start = threading.Barrier(2)
            for call in calls:
                threads.append(threading.Thread(target=self._raced, args=(call, study_id, start)))
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return raced

    def _raced(self, call: Callable[[str], None], study_id: str, start: threading.Barrier) -> None:
        start.wait()
        try:
            call(study_id)
        except tracking.TransitionRefused:
            with self.lock:
                self.faults["race_lost"] += 1

    def _reprocess(self, study_id: str) -> None:
        with self.cloud.acting_as(API.name):
            study = self.store.get_study(study_id)
            assert study is not None
            reopened = manage.reprocess(
                study, self.store, Storage(self.cloud.bucket), SqsWorkQueues(), actor=ACTOR, source=ACTOR
            )
        # The new attempt's work item delivered twice.
        with self.lock:
            delay_s = self.chance.uniform(0.0, 1.0)
        self.pool.submit(self._later, delay_s, "duplicate_dispatch", study_id, int(reopened.attempt))

    def _delete(self, study_id: str) -> None:
        with self.cloud.acting_as(API.name):
            study = self.store.get_study(study_id)
            assert study is not None
            storage, executions = Storage(self.cloud.bucket), StepFunctionsExecutions()
            manage.delete(
                study, self.store, storage, executions, DynamoIdentityMaps(), actor=ACTOR, source=ACTOR
            )

    # -- waiting and counting ---------------------------------------------------------------
    def wait_terminal(self, study_ids: Sequence[str], timeout_s: float) -> None:
        pending = set(study_ids)
        deadline = time.monotonic() + timeout_s
        while pending and time.monotonic() < deadline:
            for study_id in list(pending):
                record = self.store.get_study(study_id)
                if record is not None and StudyStatus(record.status).is_terminal:
                    pending.discard(study_id)
            time.sleep(0.2)


def _executions(cloud: LocalCloud) -> Counter[str]:
    """How many executions each execution name has."""
    client = boto3.client("stepfunctions")
    names: Counter[str] = Counter()
    for page in client.get_paginator("list_executions").paginate(stateMachineArn=cloud.state_machine_arn):
        names.update(execution["name"] for execution in page["executions"])
    return names


def _spurious_rows(store: StudyStore, study_id: str) -> list[str]:
    """The audit rows of a study that repeat one event (see the module doc)."""
    once: Counter[tuple[str, str]] = Counter()
    for row in store.audit_trail(study_id):
        detail = row.detail or {}
        if row.action in ("registered", "queued", "rejected", "deleted"):
            once[(row.action, "")] += 1
        elif row.action in ("execution_started", "failed"):
            once[(row.action, str(row.source))] += 1
        elif row.action == "reprocess":
            once[(row.action, str(detail.get("attempt")))] += 1
    return [
        f"{study_id} {action} {which}".rstrip() for (action, which), n in once.items() for _ in range(n - 1)
    ]


def _leftovers(cloud: LocalCloud, store: StudyStore, deleted: set[str]) -> list[str]:
    """What remains of the deleted studies: object versions under any prefix, task and object rows."""
    if not deleted:
        return []
    found: list[str] = []
    client = boto3.client("s3")
    for page in client.get_paginator("list_object_versions").paginate(Bucket=cloud.bucket):
        for entry in [*page.get("Versions", []), *page.get("DeleteMarkers", [])]:
            if any(part in deleted for part in entry["Key"].split("/")):
                found.append(entry["Key"])
    for study_id in sorted(deleted):
        found += [f"{study_id} task {task.step}" for task in store.tasks_of(study_id)]
        found += [f"{study_id} object {row.object_key}" for row in store.objects_of(study_id, "")]
    return found


def run_soak(
    studies: int, *, seed: int = 1, batch: int = 25, odds: Odds | None = None, progress: bool = False
) -> SoakReport:
    """The soak (see the module doc); its report. `progress`: a line on stderr after each batch."""
    started = time.monotonic()
    report = SoakReport(studies)
    content = _volume()
    quiet = {"POWERTOOLS_LOG_LEVEL": "ERROR"}
    with LocalCloud(cached_template(GPU_CONTEXT), env=quiet) as cloud, _gpu_analysis():
        soak = Soak(cloud, seed, odds or Odds())
        uploaded: list[str] = []
        with soak.hooks():
            for first in range(0, studies, batch):
                wave = [soak.upload(content, n) for n in range(first, min(first + batch, studies))]
                uploaded += wave
                soak.wait_terminal(wave, timeout_s=600)
                finished = [
                    sid
                    for sid in wave
                    if (r := soak.store.get_study(sid)) is not None and r.status == StudyStatus.COMPLETED
                ]
                raced = soak.race(finished)
                time.sleep(1.5)  # let the raced attempts' duplicate work items go out
                soak.wait_terminal(raced, timeout_s=600)
                if progress:
                    done = min(first + batch, studies)
                    print(
                        f"{done}/{studies} studies, {time.monotonic() - started:.0f} s",
                        file=sys.stderr,
                        flush=True,
                    )
            report.phases_s["uploads"] = time.monotonic() - started
            soak.drain()
            cloud.wait_for_executions(timeout_s=600)
            report.phases_s["executions ended"] = time.monotonic() - started
        with cloud.acting_as(REAPER.name):
            reaper = Reaper(
                soak.store,
                Storage(cloud.bucket),
                StepFunctionsExecutions(),
                SqsWorkQueues(),
                DynamoIdentityMaps(),
            )
            report.reaped = len(reaper.reap())
        report.phases_s["reaper"] = time.monotonic() - started
        records: dict[str, StudyRecord | None] = {sid: soak.store.get_study(sid) for sid in uploaded}
        report.lost = [sid for sid, r in records.items() if r is None]
        report.stuck = [
            f"{sid} {r.status}" for sid, r in records.items() if r and not StudyStatus(r.status).is_terminal
        ]
        report.statuses = dict(Counter(r.status for r in records.values() if r is not None))
        executions = _executions(cloud)
        report.duplicate_executions = [name for name, n in executions.items() for _ in range(n - 1)]
        opened = {
            execution_name(sid, a) for sid, r in records.items() if r for a in range(1, int(r.attempt) + 1)
        }
        report.duplicate_executions += [
            f"{name} (no such attempt)" for name in executions if name not in opened
        ]
        report.spurious_audit_rows = [row for sid in uploaded for row in _spurious_rows(soak.store, sid)]
        deleted = {sid for sid, r in records.items() if r and r.status == StudyStatus.DELETED}
        report.leftovers = _leftovers(cloud, soak.store, deleted)
        report.faults = dict(soak.faults)
        report.not_injected = soak.not_injected
        report.failed = [
            f"{sid} attempt {r.attempt}: {(r.error or {}).get('step')} {(r.error or {}).get('type')}: "
            f"{(r.error or {}).get('message')}"
            for sid, r in records.items()
            if r and r.status == StudyStatus.FAILED
        ]
    report.denied_calls = [str(denial) for denial in cloud.iam.denials]
    report.elapsed_s = time.monotonic() - started
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--studies", type=int, required=True, help="how many studies to upload")
    parser.add_argument("--seed", type=int, default=1, help="the faults' random seed")
    parser.add_argument("--batch", type=int, default=25, help="studies uploaded before waiting for them")
    parser.add_argument("--json", action="store_true", help="one JSON object instead of lines")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR, stream=sys.stderr, format="%(name)s: %(message)s")
    report = run_soak(args.studies, seed=args.seed, batch=args.batch, progress=True)
    print(json.dumps(report.as_json()) if args.json else report.text(), flush=True)
    return 1 if report.problems() else 0


if __name__ == "__main__":
    sys.exit(main())
