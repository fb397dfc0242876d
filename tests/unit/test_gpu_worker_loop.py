"""The GPU worker's logic against fake queue and token adapters: batching, answers, tokens, stop."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from functions.gpu_worker import main as entry_point
from voxelpipe.adapters.gpu_queue import ReceivedMessage
from voxelpipe.adapters.task_tokens import TokenExpired
from voxelpipe.gpu.worker import (
    BadMessage,
    OnResult,
    TransientWorkerError,
    Worker,
    classify,
    failure_answer,
    micro_batches,
    parse_message,
)
from voxelpipe.gpu_settings import GpuSettings, GpuWorkerError
from voxelpipe.messages import AnalysisRequest, AnalysisResult, AnalysisTask, PreparedVolume
from voxelpipe.wiring import Runtime

VOLUME = PreparedVolume(
    volume_key="work/s/1/volume.nii",
    original_orientation=("R", "A", "S"),
    original_shape=[4, 4, 4],
    original_affine=[[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]],
    shape=[4, 4, 4],
    voxel_size_mm=[1, 1, 1],
    duration_ms=1,
)
SETTINGS = GpuSettings(heartbeat_s=4, micro_batch_size=3, idle_exit_s=0, poll_wait_s=0)


def _task(
    study_id: str, analysis: str = "model:brain", version: str = "1", owner: str | None = "lab-a"
) -> AnalysisTask:
    model_owner = owner if analysis.startswith("model:") else None
    return AnalysisTask(
        study_id=study_id,
        attempt=1,
        analysis=AnalysisRequest(
            name=analysis, version=version, runtime=Runtime.GPU, model_owner=model_owner
        ),
        volume=VOLUME,
    )


def _message(task: AnalysisTask, token: str) -> ReceivedMessage:
    body = {"task_token": token, **json.loads(task.model_dump_json())}
    return ReceivedMessage(f"id-{token}", f"receipt-{token}", json.dumps(body))


def _result(task: AnalysisTask) -> AnalysisResult:
    return AnalysisResult(
        analysis=task.analysis.name,
        version=task.analysis.version,
        parameters={},
        measures={"study": task.study_id},
        artifacts=[],
        duration_ms=1,
    )


@dataclass
class FakeQueue:
    messages: list[ReceivedMessage]
    deleted: list[str] = field(default_factory=list)
    visibility: list[tuple[str, int]] = field(default_factory=list)

    def receive(self, max_messages: int, wait_s: int) -> list[ReceivedMessage]:
        taken, self.messages = self.messages[:max_messages], self.messages[max_messages:]
        return taken

    def delete(self, receipt_handle: str) -> None:
        self.deleted.append(receipt_handle)

    def change_visibility(self, receipt_handle: str, seconds: int) -> None:
        self.visibility.append((receipt_handle, seconds))


@dataclass
class FakeTokens:
    expired: set[str] = field(default_factory=set)
    answers: list[tuple[str, str, str]] = field(default_factory=list)  # (token, kind, payload)
    heartbeats: list[str] = field(default_factory=list)

    def _check(self, token: str) -> None:
        if token in self.expired:
            raise TokenExpired(token)

    def success(self, token: str, output: str) -> None:
        self._check(token)
        self.answers.append((token, "success", output))

    def failure(self, token: str, error: str, cause: str) -> None:
        self._check(token)
        self.answers.append((token, error, cause))

    def heartbeat(self, token: str) -> None:
        self.heartbeats.append(token)
        self._check(token)


def _worker(queue: FakeQueue, tokens: FakeTokens, runner) -> Worker:
    return Worker(queue=queue, tokens=tokens, runner=runner, settings=SETTINGS, name="test")


def test_parse_message_takes_the_token_and_the_task():
    task = _task("s1")
    parsed = parse_message(_message(task, "t1"))
    assert parsed.token == "t1" and parsed.task == task


@pytest.mark.parametrize(
    ("body", "answerable"),
    [
        ("not json", False),
        ("[1]", False),
        ('{"study_id": "s"}', False),
        ('{"task_token": "t", "x": 1}', True),
    ],
)
def test_a_malformed_message_is_refused_with_its_token_when_it_has_one(body, answerable):
    with pytest.raises(BadMessage) as refused:
        parse_message(ReceivedMessage("id", "r", body))
    assert (refused.value.token is not None) is answerable


def test_micro_batches_group_by_analysis_and_cap_the_size():
    messages = [
        _message(_task("a1"), "1"),
        _message(_task("b1", analysis="tissue-seg"), "2"),
        _message(_task("a2"), "3"),
        _message(_task("a3"), "4"),
        _message(_task("a4"), "5"),
        _message(_task("c1", version="2"), "6"),
        _message(_task("d1", owner="lab-b"), "7"),  # another tenant's model:brain is another model
    ]
    batches = micro_batches([parse_message(m) for m in messages], size=3)
    assert [[t.task.study_id for t in batch] for batch in batches] == [
        ["a1", "a2", "a3"],
        ["a4"],
        ["b1"],
        ["c1"],
        ["d1"],
    ]


def test_classify_names_transient_failures():
    throttled = ClientError({"Error": {"Code": "SlowDown"}}, "GetObject")
    server = ClientError({"Error": {"Code": "X"}, "ResponseMetadata": {"HTTPStatusCode": 503}}, "GetObject")
    missing = ClientError({"Error": {"Code": "NoSuchKey"}}, "GetObject")
    oom = type("OutOfMemoryError", (RuntimeError,), {})("CUDA out of memory")
    assert classify(TransientWorkerError("x")) == GpuWorkerError.TRANSIENT
    assert classify(EndpointConnectionError(endpoint_url="https://s3")) == GpuWorkerError.TRANSIENT
    assert classify(throttled) == classify(server) == classify(oom) == GpuWorkerError.TRANSIENT
    assert classify(missing) == classify(ValueError("bad")) == GpuWorkerError.ANALYSIS_FAILED


def test_failure_answer_carries_the_exception_as_lambda_reports_one():
    error, cause = failure_answer(ValueError("no brain found"))
    assert error == GpuWorkerError.ANALYSIS_FAILED
    assert json.loads(cause) == {"errorType": "ValueError", "errorMessage": "no brain found"}


def test_the_worker_runs_micro_batches_answers_each_token_then_deletes_and_exits_when_idle():
    tasks = [_task("s1"), _task("s2"), _task("s3", analysis="tissue-seg")]
    queue = FakeQueue([_message(t, f"t{i}") for i, t in enumerate(tasks)])
    tokens = FakeTokens()
    batches: list[list[str]] = []

    def runner(batch: Sequence[AnalysisTask], on_result: OnResult) -> list[AnalysisResult | Exception]:
        batches.append([t.study_id for t in batch])
        return [_result(t) if t.study_id != "s2" else ValueError("diverged") for t in batch]

    summary = _worker(queue, tokens, runner).run()
    assert batches == [["s1", "s2"], ["s3"]]
    assert [(token, kind) for token, kind, _ in tokens.answers] == [
        ("t0", "success"),
        ("t1", GpuWorkerError.ANALYSIS_FAILED),
        ("t2", "success"),
    ]
    assert json.loads(tokens.answers[0][2])["measures"] == {"study": "s1"}
    assert queue.deleted == ["receipt-t0", "receipt-t1", "receipt-t2"]
    assert (summary.succeeded, summary.failed, summary.exit_reason) == (2, 1, "idle")


def test_a_stale_token_is_dropped_without_running_its_task():
    queue = FakeQueue([_message(_task("s1"), "old"), _message(_task("s2"), "new")])
    tokens = FakeTokens(expired={"old"})
    ran: list[str] = []

    def runner(batch: Sequence[AnalysisTask], on_result: OnResult) -> list[AnalysisResult | Exception]:
        ran.extend(t.study_id for t in batch)
        return [_result(t) for t in batch]

    summary = _worker(queue, tokens, runner).run()
    assert ran == ["s2"]
    assert queue.deleted == ["receipt-old", "receipt-new"]
    assert summary.dropped == 1


def test_a_token_that_expires_during_the_run_is_logged_and_its_message_deleted():
    task = _task("s1")
    queue = FakeQueue([_message(task, "t")])
    tokens = FakeTokens()

    def runner(batch: Sequence[AnalysisTask], on_result: OnResult) -> list[AnalysisResult | Exception]:
        tokens.expired.add("t")  # the state machine timed the task out meanwhile
        return [_result(t) for t in batch]

    summary = _worker(queue, tokens, runner).run()
    assert tokens.answers == [] and queue.deleted == ["receipt-t"] and summary.dropped == 1


def test_an_unanswerable_token_leaves_the_message_for_the_retry():
    queue = FakeQueue([_message(_task("s1"), "t")])

    class Unreachable(FakeTokens):
        def success(self, token: str, output: str) -> None:
            raise EndpointConnectionError(endpoint_url="https://states")

    summary = _worker(queue, Unreachable(), lambda batch, on_result: [_result(t) for t in batch]).run()
    assert queue.deleted == [] and summary.succeeded == 0


def test_a_runner_that_raises_fails_its_whole_batch():
    queue = FakeQueue([_message(_task("s1"), "a"), _message(_task("s2"), "b")])
    tokens = FakeTokens()

    def runner(batch: Sequence[AnalysisTask], on_result: OnResult) -> list[AnalysisResult | Exception]:
        raise TransientWorkerError("CUDA out of memory")

    _worker(queue, tokens, runner).run()
    assert [kind for _, kind, _ in tokens.answers] == [GpuWorkerError.TRANSIENT] * 2


def test_a_bad_message_with_a_token_is_answered_bad_message_and_deleted():
    queue = FakeQueue([ReceivedMessage("id", "r", '{"task_token": "t", "study_id": 3}')])
    tokens = FakeTokens()
    summary = _worker(queue, tokens, lambda batch, on_result: []).run()
    assert [(t, kind) for t, kind, _ in tokens.answers] == [("t", GpuWorkerError.BAD_MESSAGE)]
    assert queue.deleted == ["r"] and summary.dropped == 1


def test_heartbeats_keep_every_held_token_alive_and_its_message_hidden():
    queue = FakeQueue([_message(_task("s1"), "a"), _message(_task("s2"), "b")])
    tokens = FakeTokens()
    worker = _worker(queue, tokens, lambda batch, on_result: [])
    held = worker._admit(queue.receive(10, 0))
    assert [t.token for t in held] == ["a", "b"]
    tokens.heartbeats.clear()
    worker.heartbeat_once()
    assert tokens.heartbeats == ["a", "b"]
    assert queue.visibility == [("receipt-a", SETTINGS.visibility_timeout_s), ("receipt-b", 8)]


def test_stop_releases_the_messages_not_yet_started_and_takes_no_more_work():
    tasks = [_task("s1"), _task("s2", analysis="tissue-seg"), _task("s3")]
    queue = FakeQueue([_message(t, f"t{i}") for i, t in enumerate(tasks)])
    tokens = FakeTokens()
    worker = _worker(queue, tokens, lambda batch, on_result: [])
    ran: list[str] = []

    def runner(batch: Sequence[AnalysisTask], on_result: OnResult) -> list[AnalysisResult | Exception]:
        ran.extend(t.study_id for t in batch)
        worker.stop()  # SIGTERM while the first micro-batch runs
        return [_result(t) for t in batch]

    worker.runner = runner
    summary = worker.run()
    assert ran == ["s1", "s3"]  # the first micro-batch (model:brain) finished and was answered
    assert queue.visibility == [("receipt-t1", 0)]  # tissue-seg's message went back to the queue
    assert [token for token, _, _ in tokens.answers] == ["t0", "t2"]
    assert (summary.released, summary.exit_reason) == (1, "stopped")


def test_settings_from_context_and_environment():
    settings = GpuSettings.from_context(
        {"voxelpipe:gpu:heartbeat_s": "10", "voxelpipe:gpu:instance_types": "g6.xlarge, g5"}.get
    )
    assert settings.heartbeat_s == 10 and settings.instance_types == ("g6.xlarge", "g5")
    assert settings.visibility_timeout_s == 20
    assert GpuSettings.from_env({k.value: v for k, v in settings.worker_env().items()}).heartbeat_s == 10
    with pytest.raises(ValueError, match="poll_wait_s"):
        GpuSettings.from_context({"voxelpipe:gpu:poll_wait_s": 30}.get)


def test_a_message_that_cannot_be_released_on_stop_is_answered_worker_lost():
    class Stuck(FakeQueue):
        def change_visibility(self, receipt_handle: str, seconds: int) -> None:
            raise ClientError({"Error": {"Code": "ReceiptHandleIsInvalid"}}, "ChangeMessageVisibility")

    queue = Stuck([_message(_task("s1"), "t")])
    tokens = FakeTokens()
    worker = _worker(queue, tokens, lambda batch, on_result: [])
    worker._admit(queue.receive(10, 0))
    worker.stop()
    assert [(token, kind) for token, kind, _ in tokens.answers] == [("t", GpuWorkerError.WORKER_LOST)]


def test_an_outcome_reported_early_is_answered_at_once_and_only_once():
    tasks = [_task("s1"), _task("s2")]
    queue = FakeQueue([_message(t, f"t{i}") for i, t in enumerate(tasks)])
    tokens = FakeTokens()
    answered_before_the_batch_ended: list[list[str]] = []

    def runner(batch: Sequence[AnalysisTask], on_result: OnResult) -> list[AnalysisResult | Exception]:
        on_result(1, _result(batch[1]))  # the second study finished first
        answered_before_the_batch_ended.append([token for token, _, _ in tokens.answers])
        return [_result(t) for t in batch]

    summary = _worker(queue, tokens, runner).run()
    assert answered_before_the_batch_ended == [["t1"]]
    assert [token for token, _, _ in tokens.answers] == ["t1", "t0"]
    assert queue.deleted == ["receipt-t1", "receipt-t0"] and summary.succeeded == 2


def test_sigterm_stops_the_container_entry_point_and_hands_back_held_messages(monkeypatch):
    class SlowQueue(FakeQueue):
        def receive(self, max_messages: int, wait_s: int) -> list[ReceivedMessage]:
            time.sleep(0.02)  # a long poll, shortened
            return super().receive(max_messages, wait_s)

    queue = SlowQueue([_message(_task("s1"), "a"), _message(_task("s2", analysis="tissue-seg"), "b")])
    tokens = FakeTokens()

    def terminate_during_the_first_batch(batch, on_result):
        os.kill(os.getpid(), signal.SIGTERM)  # Batch scales in while s1 runs
        time.sleep(0.2)  # the handler's stop() runs meanwhile
        return [_result(t) for t in batch]

    settings = GpuSettings(heartbeat_s=4, micro_batch_size=3, idle_exit_s=60, poll_wait_s=0)
    worker = Worker(queue=queue, tokens=tokens, runner=terminate_during_the_first_batch, settings=settings)
    monkeypatch.setattr(entry_point, "worker_from_environment", lambda: worker)
    previous = signal.getsignal(signal.SIGTERM)
    try:
        assert threading.current_thread() is threading.main_thread()
        assert entry_point.main() == 0
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert worker.summary.exit_reason == "stopped"
    assert [token for token, _, _ in tokens.answers] == ["a"]  # the running task was answered
    assert queue.visibility == [("receipt-b", 0)]  # the other went back to the queue


def test_a_worker_past_its_lifetime_takes_no_more_work():
    now = [0.0]
    queue = FakeQueue([_message(_task("s1"), "a"), _message(_task("s2"), "b")])
    tokens = FakeTokens()

    def runner(batch: Sequence[AnalysisTask], on_result: OnResult) -> list[AnalysisResult | Exception]:
        now[0] += 7200  # a long micro-batch
        return [_result(t) for t in batch]

    settings = GpuSettings(micro_batch_size=1, idle_exit_s=60, poll_wait_s=0, worker_lifetime_s=3600)
    worker = Worker(queue=queue, tokens=tokens, runner=runner, settings=settings, clock=lambda: now[0])
    summary = worker.run()
    assert summary.exit_reason == "lifetime" and summary.succeeded == 1
    assert [m.body for m in queue.messages] == [_message(_task("s2"), "b").body]  # left for others
    assert settings.job_timeout_s > settings.worker_lifetime_s + settings.task_timeout_s


def test_receive_errors_and_unknown_token_checks_do_not_kill_the_worker():
    class Flaky(FakeQueue):
        calls = 0

        def receive(self, max_messages: int, wait_s: int) -> list[ReceivedMessage]:
            self.calls += 1
            if self.calls == 1:
                raise EndpointConnectionError(endpoint_url="https://sqs")
            return super().receive(max_messages, wait_s)

    class Unsure(FakeTokens):
        def heartbeat(self, token: str) -> None:
            raise ClientError({"Error": {"Code": "InternalError"}}, "SendTaskHeartbeat")

    queue = Flaky([_message(_task("s1"), "t")])
    tokens = Unsure()
    summary = _worker(queue, tokens, lambda batch, on_result: [_result(t) for t in batch]).run()
    assert summary.succeeded == 1 and [token for token, _, _ in tokens.answers] == ["t"]
