"""The GPU worker's loop: take task-token messages, run them in micro-batches, answer, delete.

One worker holds each message it took until it has answered its token (then deletes it); while it
holds messages a heartbeat thread keeps their tokens alive (SendTaskHeartbeat) and the messages
hidden (ChangeMessageVisibility). A worker that dies answers nothing and stops heartbeating, so the
state machine's task times out on its heartbeat and retries with a new message and token, which
another worker takes. `stop()` (SIGTERM: Batch scale-in, spot reclaim) stops taking work and
releases the messages not yet started, whose tokens stay valid, to the other workers.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from botocore.exceptions import BotoCoreError, ClientError
from pydantic import ValidationError

from voxelpipe.adapters.gpu_queue import ReceivedMessage
from voxelpipe.adapters.task_tokens import TokenExpired
from voxelpipe.gpu_settings import GpuSettings, GpuWorkerError
from voxelpipe.messages import AnalysisResult, AnalysisTask
from voxelpipe.observability import logger

TOKEN_FIELD = "task_token"
RECEIVE_ERROR_PAUSE_S = 1.0
# AWS error codes that say "try again later", not "this request is wrong".
_TRANSIENT_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestLimitExceeded",
        "SlowDown",
        "ServiceUnavailable",
        "InternalError",
        "InternalServerError",
        "ProvisionedThroughputExceededException",
        "RequestTimeout",
    }
)

Outcome = AnalysisResult | Exception
# Called by a runner as soon as one task's outcome is known: (index in the batch, outcome).
OnResult = Callable[[int, Outcome], None]
# Runs the tasks of one micro-batch (one analysis), returning one outcome per task, in order; it
# may report outcomes earlier through `on_result` (any thread), so that tokens are answered early.
Runner = Callable[[Sequence[AnalysisTask], OnResult], Sequence[Outcome]]


class TransientWorkerError(RuntimeError):
    """Raised by a runner for a failure that another try may not meet (answered GpuWorker.Transient)."""


class TaskQueue(Protocol):
    def receive(self, max_messages: int, wait_s: int) -> list[ReceivedMessage]: ...

    def delete(self, receipt_handle: str) -> None: ...

    def change_visibility(self, receipt_handle: str, seconds: int) -> None: ...


class TokenAnswers(Protocol):
    def success(self, token: str, output: str) -> None: ...

    def failure(self, token: str, error: str, cause: str) -> None: ...

    def heartbeat(self, token: str) -> None: ...


@dataclass(frozen=True)
class GpuTask:
    """A message taken from the GPU queue: the token to answer and the task to run."""

    message: ReceivedMessage
    token: str
    task: AnalysisTask

    @property
    def batch_key(self) -> tuple[str, str, str]:
        # A registered model is also its owner's: two tenants' model:NAME are two models.
        analysis = self.task.analysis
        return (analysis.name, analysis.model_owner or "", analysis.version)


class BadMessage(ValueError):
    """A GPU queue message that is not a task; `token` is set when it can still be answered."""

    def __init__(self, reason: str, token: str | None) -> None:
        super().__init__(reason)
        self.token = token


def parse_message(message: ReceivedMessage) -> GpuTask:
    """The task a message carries (the state machine's body: the token and the AnalysisTask fields)."""
    try:
        body = json.loads(message.body)
    except json.JSONDecodeError as error:
        raise BadMessage(f"not JSON: {error}", None) from error
    if not isinstance(body, dict):
        raise BadMessage("not a JSON object", None)
    token = body.pop(TOKEN_FIELD, None)
    if not isinstance(token, str) or not token:
        raise BadMessage(f"no {TOKEN_FIELD}", None)
    try:
        return GpuTask(message, token, AnalysisTask.model_validate(body))
    except ValidationError as error:
        raise BadMessage(f"not an AnalysisTask: {error}", token) from error


def micro_batches(tasks: Sequence[GpuTask], size: int) -> list[list[GpuTask]]:
    """Tasks grouped by analysis (name, model owner and version), in order of arrival, at most `size`
    to a batch."""
    groups: dict[tuple[str, str, str], list[GpuTask]] = {}
    for task in tasks:
        groups.setdefault(task.batch_key, []).append(task)
    return [group[start : start + size] for group in groups.values() for start in range(0, len(group), size)]


def classify(error: Exception) -> GpuWorkerError:
    """The error name a failed task is answered with: transient ones are retried by the state machine."""
    if isinstance(error, TransientWorkerError | BotoCoreError):
        return GpuWorkerError.TRANSIENT
    if isinstance(error, ClientError):
        code = error.response.get("Error", {}).get("Code", "")
        status = int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        if code in _TRANSIENT_CODES or status >= 500:
            return GpuWorkerError.TRANSIENT
    # torch.cuda.OutOfMemoryError, by name: another worker (or a smaller batch) may have room.
    if type(error).__name__ == "OutOfMemoryError":
        return GpuWorkerError.TRANSIENT
    return GpuWorkerError.ANALYSIS_FAILED


def failure_answer(error: Exception) -> tuple[str, str]:
    """(error, cause) for SendTaskFailure; the cause is the exception as Lambda reports one, so
    MarkFailed describes GPU and Lambda failures alike."""
    cause = {"errorType": type(error).__name__, "errorMessage": str(error)}
    return classify(error).value, json.dumps(cause)


@dataclass
class WorkerSummary:
    """What one worker did in its life (logged when it exits)."""

    received: int = 0
    succeeded: int = 0
    failed: int = 0
    dropped: int = 0  # stale or unanswerable messages deleted without running
    released: int = 0  # handed back to the queue on stop
    batches: int = 0
    exit_reason: str = ""


@dataclass
class _Held:
    task: GpuTask
    started: bool = False
    expired: bool = False


@dataclass
class Worker:
    """One GPU worker; `run()` returns when idle for `settings.idle_exit_s` or after `stop()`."""

    queue: TaskQueue
    tokens: TokenAnswers
    runner: Runner
    settings: GpuSettings
    name: str = "gpu-worker"
    clock: Callable[[], float] = time.monotonic
    summary: WorkerSummary = field(default_factory=WorkerSummary)

    def __post_init__(self) -> None:
        self._held: dict[str, _Held] = {}  # by receipt handle
        self._lock = threading.Lock()
        self._stopping = threading.Event()

    # -- lifecycle -----------------------------------------------------------------------------
    def run(self) -> WorkerSummary:
        heartbeats = threading.Thread(target=self._heartbeat_loop, name=f"{self.name}-heartbeat", daemon=True)
        heartbeats.start()
        born = idle_since = self.clock()
        try:
            while not self._stopping.is_set():
                if self.clock() - born >= self.settings.worker_lifetime_s:
                    self.summary.exit_reason = "lifetime"
                    break
                try:
                    messages = self._receive()
                except (BotoCoreError, ClientError):
                    # SQS unreachable or throttling: wait a little and poll again.
                    logger.exception("receive failed", extra={"worker": self.name})
                    self._stopping.wait(RECEIVE_ERROR_PAUSE_S)
                    continue
                tasks = self._admit(messages)
                if not tasks:
                    if self.clock() - idle_since >= self.settings.idle_exit_s:
                        self.summary.exit_reason = "idle"
                        break
                    continue
                for batch in micro_batches(tasks, self.settings.micro_batch_size):
                    self._run_batch(batch)
                idle_since = self.clock()
            else:
                self.summary.exit_reason = "stopped"
        finally:
            # Also on a crash (an exception out of here): the heartbeats stop with the worker,
            # so the state machine times its tasks out and retries them elsewhere.
            self._stopping.set()
            heartbeats.join()
        logger.info("gpu worker exits", extra={"worker": self.name, **self.summary.__dict__})
        return self.summary

    def stop(self) -> None:
        """Stop taking work; hand the messages not yet started back to the queue (tokens stay valid)."""
        self._stopping.set()
        with self._lock:
            pending = [receipt for receipt, held in self._held.items() if not held.started]
            for receipt in pending:
                self._release(receipt, self._held.pop(receipt).task)

    def _release(self, receipt: str, task: GpuTask) -> None:
        try:
            self.queue.change_visibility(receipt, 0)
            self.summary.released += 1
        except (BotoCoreError, ClientError):
            # Not released: answer it so that the state machine retries now rather than after the
            # message's hidden time.
            logger.exception("could not release a message", extra={"worker": self.name})
            self._answer_failure(task, GpuWorkerError.WORKER_LOST.value, "the worker stopped")

    # -- taking work ---------------------------------------------------------------------------
    def _receive(self) -> list[ReceivedMessage]:
        """Up to one micro-batch of messages: the first receive long-polls, the rest don't wait."""
        messages: list[ReceivedMessage] = []
        wait_s = self.settings.poll_wait_s
        while len(messages) < self.settings.micro_batch_size and not self._stopping.is_set():
            received = self.queue.receive(self.settings.micro_batch_size - len(messages), wait_s)
            if not received:
                break
            messages.extend(received)
            wait_s = 0
        return messages

    def _admit(self, messages: list[ReceivedMessage]) -> list[GpuTask]:
        """Parse, check each token is still alive (a stale message is dropped unrun), and hold."""
        admitted = []
        for message in messages:
            self.summary.received += 1
            try:
                task = parse_message(message)
            except BadMessage as bad:
                logger.error("bad message", extra={"worker": self.name, "reason": str(bad)})
                if bad.token is not None:
                    self._answer_failure_token(bad.token, GpuWorkerError.BAD_MESSAGE.value, str(bad))
                self._delete(message.receipt_handle)
                self.summary.dropped += 1
                continue
            try:
                self.tokens.heartbeat(task.token)
            except (BotoCoreError, ClientError):
                # Unknown whether the token lives: run it; an expired one's answer is dropped.
                logger.exception("token check failed", extra=self._task_log(task))
            except TokenExpired:
                # A message whose task already timed out (its worker died; the state machine has
                # sent a retry with a new token): nothing may answer it any more.
                logger.warning("stale task token dropped", extra=self._task_log(task))
                self._delete(message.receipt_handle)
                self.summary.dropped += 1
                continue
            with self._lock:
                if self._stopping.is_set():  # stopped while admitting: hand it back too
                    self._release(message.receipt_handle, task)
                    continue
                self._held[message.receipt_handle] = _Held(task)
            admitted.append(task)
        return admitted

    # -- running and answering -----------------------------------------------------------------
    def _run_batch(self, batch: list[GpuTask]) -> None:
        with self._lock:
            batch = [task for task in batch if task.message.receipt_handle in self._held]  # not released
            if not batch:
                return
            for task in batch:
                self._held[task.message.receipt_handle].started = True
        self.summary.batches += 1
        logger.info(
            "running micro-batch",
            extra={"worker": self.name, "analysis": batch[0].task.analysis.name, "size": len(batch)},
        )
        answered: set[int] = set()
        answering = threading.Lock()

        def answer_once(index: int, outcome: Outcome) -> None:
            with answering:
                if index in answered or not 0 <= index < len(batch):
                    return
                answered.add(index)
            self._answer(batch[index], outcome)

        outcomes: Sequence[Outcome]
        try:
            outcomes = self.runner([task.task for task in batch], answer_once)
        except Exception as error:  # the whole batch failed together
            outcomes = [error] * len(batch)
        if len(outcomes) != len(batch):
            mismatch = RuntimeError(f"the runner returned {len(outcomes)} outcomes for {len(batch)} tasks")
            outcomes = [mismatch] * len(batch)
        for index, outcome in enumerate(outcomes):
            answer_once(index, outcome)  # those not reported early

    def _count(self, outcome: str) -> None:
        with self._lock:
            setattr(self.summary, outcome, getattr(self.summary, outcome) + 1)

    def _answer(self, task: GpuTask, outcome: Outcome) -> None:
        """Answer the token, then delete the message (never before: an unanswered task must retry).
        Called from the runner's threads too (early answers)."""
        receipt = task.message.receipt_handle
        try:
            if isinstance(outcome, AnalysisResult):
                self.tokens.success(task.token, outcome.model_dump_json())
                self._count("succeeded")
            else:
                error, cause = failure_answer(outcome)
                logger.warning("task failed", extra={**self._task_log(task), "error": error, "cause": cause})
                self.tokens.failure(task.token, error, cause)
                self._count("failed")
        except TokenExpired:
            logger.warning("task token expired before the answer; answer dropped", extra=self._task_log(task))
            self._count("dropped")
        except (BotoCoreError, ClientError):
            # Unanswered: stop heartbeating it so that the task times out and is retried.
            logger.exception("could not answer a task token", extra=self._task_log(task))
            with self._lock:
                self._held.pop(receipt, None)
            return
        with self._lock:
            self._held.pop(receipt, None)
        self._delete(receipt)

    def _answer_failure(self, task: GpuTask, error: str, cause: str) -> None:
        self._answer_failure_token(task.token, error, cause)

    def _answer_failure_token(self, token: str, error: str, cause: str) -> None:
        try:
            self.tokens.failure(token, error, json.dumps({"errorType": error, "errorMessage": cause}))
        except TokenExpired:
            pass
        except (BotoCoreError, ClientError):
            logger.exception("could not answer a task token", extra={"worker": self.name})

    def _delete(self, receipt: str) -> None:
        try:
            self.queue.delete(receipt)
        except (BotoCoreError, ClientError):
            # It reappears later with a token that no longer answers: dropped then.
            logger.exception("could not delete a message", extra={"worker": self.name})

    # -- heartbeats ----------------------------------------------------------------------------
    def _heartbeat_loop(self) -> None:
        while not self._stopping.wait(self.settings.heartbeat_interval_s):
            self.heartbeat_once()

    def heartbeat_once(self) -> None:
        """Heartbeat every held token and keep its message hidden."""
        with self._lock:
            held = list(self._held.items())
        for receipt, entry in held:
            if entry.expired:
                continue
            try:
                self.tokens.heartbeat(entry.task.token)
                self.queue.change_visibility(receipt, self.settings.visibility_timeout_s)
            except TokenExpired:
                entry.expired = True  # its answer will be dropped; nothing else to do
                logger.warning("task token expired while held", extra=self._task_log(entry.task))
            except (BotoCoreError, ClientError):
                logger.exception("heartbeat failed", extra=self._task_log(entry.task))

    def _task_log(self, task: GpuTask) -> dict[str, object]:
        return {
            "worker": self.name,
            "study_id": task.task.study_id,
            "attempt": task.task.attempt,
            "analysis": task.task.analysis.name,
            "message_id": task.message.message_id,
        }
