"""The scaler Lambda against moto's SQS and Batch: worker jobs follow the GPU queue's depth."""

from __future__ import annotations

from collections.abc import Iterator

import boto3
import pytest
from moto import mock_aws

from functions.scaler.handler import lambda_handler
from infra.local.cloud import LOCAL_ENV
from infra.local.lambda_runtime import LambdaContext
from tests.fixtures.events import load_event
from voxelpipe.function_specs import SCALER
from voxelpipe.wiring import EnvVar


@pytest.fixture
def batch(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, str]]:
    """A GPU queue and a Batch job queue and definition (moto runs no container: jobs just succeed)."""
    for key, value in LOCAL_ENV.items():
        monkeypatch.setenv(key, value)
    with mock_aws(config={"batch": {"use_docker": False}}):
        role = boto3.client("iam").create_role(RoleName="batch", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
        client = boto3.client("batch")
        environment = client.create_compute_environment(
            computeEnvironmentName="gpu-workers", type="UNMANAGED", serviceRole=role
        )["computeEnvironmentArn"]
        job_queue = client.create_job_queue(
            jobQueueName="gpu-jobs",
            state="ENABLED",
            priority=1,
            computeEnvironmentOrder=[{"order": 1, "computeEnvironment": environment}],
        )["jobQueueArn"]
        definition = client.register_job_definition(
            jobDefinitionName="gpu-worker",
            type="container",
            containerProperties={"image": "worker", "vcpus": 4, "memory": 14336},
        )["jobDefinitionArn"]
        queue_url = boto3.client("sqs").create_queue(QueueName="gpu")["QueueUrl"]
        monkeypatch.setenv(EnvVar.GPU_QUEUE_URL, queue_url)
        monkeypatch.setenv(EnvVar.GPU_JOB_QUEUE, job_queue)
        monkeypatch.setenv(EnvVar.GPU_JOB_DEFINITION, definition)
        monkeypatch.setenv(EnvVar.GPU_MICRO_BATCH_SIZE, "8")
        monkeypatch.setenv(EnvVar.GPU_MAX_WORKERS, "4")
        yield job_queue, queue_url


def _tick() -> dict:
    context = LambdaContext(function_name=SCALER.name, memory_limit_in_mb=SCALER.memory_mb, timeout_s=30)
    return lambda_handler(load_event("scheduled_event.json"), context)


def _submitted(job_queue: str) -> int:
    client = boto3.client("batch")
    return sum(
        len(client.list_jobs(jobQueue=job_queue, jobStatus=state)["jobSummaryList"])
        for state in ("SUBMITTED", "PENDING", "RUNNABLE", "STARTING", "RUNNING", "SUCCEEDED")
    )


def test_an_empty_queue_starts_no_worker(batch: tuple[str, str]):
    job_queue, _ = batch
    assert _tick() == {"visible": 0, "in_flight": 0, "active_jobs": 0, "submitted": 0, "jobs": []}
    assert _submitted(job_queue) == 0


def test_a_backlog_starts_one_worker_per_micro_batch(batch: tuple[str, str]):
    job_queue, queue_url = batch
    sqs = boto3.client("sqs")
    for index in range(9):
        sqs.send_message(QueueUrl=queue_url, MessageBody=f'{{"n": {index}}}')
    outcome = _tick()
    assert outcome["visible"] == 9 and outcome["submitted"] == 2 and len(outcome["jobs"]) == 2
    assert _submitted(job_queue) == 2
