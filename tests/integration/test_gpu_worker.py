"""The GPU worker and its adapters against moto's SQS and Step Functions (executing a task-token state)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator, Sequence

import boto3
import pytest
from moto import mock_aws

from infra.local.cloud import LOCAL_ENV
from infra.local.moto_fixes import moto_fixes
from voxelpipe.adapters.gpu_queue import GpuQueue
from voxelpipe.adapters.queues import QueueDepth
from voxelpipe.adapters.task_tokens import TaskTokens, TokenExpired
from voxelpipe.gpu.worker import OnResult, TransientWorkerError, Worker
from voxelpipe.gpu_settings import GpuSettings, GpuWorkerError
from voxelpipe.messages import AnalysisRequest, AnalysisResult, AnalysisTask, PreparedVolume
from voxelpipe.wiring import Runtime

# A loaded machine may take over 2 s between the state machine sending a task and the worker's first
# heartbeat: the token would time out before the worker could hold it.
HEARTBEAT_S = 4
SETTINGS = GpuSettings(heartbeat_s=HEARTBEAT_S, micro_batch_size=4, idle_exit_s=1, poll_wait_s=1)
TASK = AnalysisTask(
    study_id="s1",
    attempt=1,
    analysis=AnalysisRequest(name="model:tiny", version="1", runtime=Runtime.GPU),
    volume=PreparedVolume(
        volume_key="work/s1/1/volume.nii",
        original_orientation=("R", "A", "S"),
        original_shape=[2, 2, 2],
        original_affine=[[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]],
        shape=[2, 2, 2],
        voxel_size_mm=[1, 1, 1],
        duration_ms=1,
    ),
)


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for key, value in LOCAL_ENV.items():
        monkeypatch.setenv(key, value)
    with mock_aws(config={"stepfunctions": {"execute_state_machine": True}}), moto_fixes():
        yield


def _state_machine(queue_url: str) -> str:
    # One task-token state, as the synthesized RunOnGpu state sends it.
    definition = {
        "StartAt": "RunOnGpu",
        "States": {
            "RunOnGpu": {
                "Type": "Task",
                "Resource": "arn:aws:states:::sqs:sendMessage.waitForTaskToken",
                "Parameters": {
                    "QueueUrl": queue_url,
                    "MessageBody": {
                        "task_token.$": "$$.Task.Token",
                        "study_id.$": "$.study_id",
                        "attempt.$": "$.attempt",
                        "analysis.$": "$.analysis",
                        "volume.$": "$.volume",
                        "subject.$": "$.subject",
                    },
                },
                "HeartbeatSeconds": HEARTBEAT_S,
                "End": True,
            }
        },
    }
    return boto3.client("stepfunctions").create_state_machine(
        name="gpu", definition=json.dumps(definition), roleArn="arn:aws:iam::123456789012:role/sfn"
    )["stateMachineArn"]


def _start(machine: str) -> str:
    return boto3.client("stepfunctions").start_execution(
        stateMachineArn=machine, input=TASK.model_dump_json()
    )["executionArn"]


def _wait(execution: str) -> dict:
    client = boto3.client("stepfunctions")
    for _ in range(600):
        described = client.describe_execution(executionArn=execution)
        if described["status"] != "RUNNING":
            return described
        time.sleep(0.05)
    raise AssertionError("the execution did not end")


def _queue() -> GpuQueue:
    return GpuQueue(boto3.client("sqs").create_queue(QueueName="gpu")["QueueUrl"])


def _result(task: AnalysisTask) -> AnalysisResult:
    return AnalysisResult(
        analysis=task.analysis.name,
        version="1",
        parameters={},
        measures={"ok": 1},
        artifacts=[],
        duration_ms=1,
    )


def test_a_worker_answers_a_task_that_outlasts_several_heartbeat_timeouts(aws):
    queue = _queue()
    execution = _start(_state_machine(queue.url))

    def slow(tasks: Sequence[AnalysisTask], on_result: OnResult) -> list[AnalysisResult | Exception]:
        time.sleep(2.5 * HEARTBEAT_S)  # only the heartbeats keep the task alive this long
        return [_result(t) for t in tasks]

    summary = Worker(queue=queue, tokens=TaskTokens(), runner=slow, settings=SETTINGS).run()
    described = _wait(execution)
    assert described["status"] == "SUCCEEDED"
    assert json.loads(described["output"])["measures"] == {"ok": 1}
    assert summary.succeeded == 1
    assert queue.depth() == QueueDepth(0, 0)  # answered, then deleted


def test_a_failure_reaches_the_state_machine_with_its_error_and_cause(aws):
    queue = _queue()
    execution = _start(_state_machine(queue.url))

    def oom(tasks: Sequence[AnalysisTask], on_result: OnResult) -> list[AnalysisResult | Exception]:
        return [TransientWorkerError("CUDA out of memory") for _ in tasks]

    Worker(queue=queue, tokens=TaskTokens(), runner=oom, settings=SETTINGS).run()
    described = _wait(execution)
    assert described["status"] == "FAILED"
    assert described["error"] == GpuWorkerError.TRANSIENT
    assert json.loads(described["cause"]) == {
        "errorType": "TransientWorkerError",
        "errorMessage": "CUDA out of memory",
    }


def test_stop_releases_an_unstarted_message_to_another_worker(aws):
    queue = _queue()
    execution = _start(_state_machine(queue.url))
    started = threading.Event()
    release = threading.Event()

    def blocked(tasks: Sequence[AnalysisTask], on_result: OnResult) -> list[AnalysisResult | Exception]:
        started.set()
        release.wait(10)
        return [_result(t) for t in tasks]

    # The first worker holds the message without starting it: stop() hands it back at once.
    first = Worker(queue=queue, tokens=TaskTokens(), runner=blocked, settings=SETTINGS, name="first")
    (message,) = first._admit(queue.receive(1, 1))
    first.stop()
    assert queue.depth().visible == 1 and first.summary.released == 1
    second = Worker(queue=queue, tokens=TaskTokens(), runner=blocked, settings=SETTINGS, name="second")
    runner = threading.Thread(target=second.run)
    runner.start()
    assert started.wait(10)
    release.set()
    runner.join(30)
    assert _wait(execution)["status"] == "SUCCEEDED" and second.summary.succeeded == 1
    assert message.task == TASK


def test_an_unknown_token_is_token_expired(aws):
    with pytest.raises(TokenExpired):
        TaskTokens().success("no-such-token", "{}")
    with pytest.raises(TokenExpired):
        TaskTokens().heartbeat("no-such-token")
