"""GPU worker jobs on AWS Batch: how many are active, and submitting more."""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING

import boto3

from voxelpipe.wiring import EnvVar

if TYPE_CHECKING:
    from mypy_boto3_batch import BatchClient
    from mypy_boto3_batch.literals import JobStatusType

# A job in any of these states is, or will become, a worker.
ACTIVE_STATES: tuple[JobStatusType, ...] = ("SUBMITTED", "PENDING", "RUNNABLE", "STARTING", "RUNNING")


@cache
def _client() -> BatchClient:
    return boto3.client("batch")


@dataclass(frozen=True)
class BatchJobs:
    job_queue: str
    job_definition: str

    @classmethod
    def from_environment(cls) -> BatchJobs:
        return cls(os.environ[EnvVar.GPU_JOB_QUEUE], os.environ[EnvVar.GPU_JOB_DEFINITION])

    def active(self) -> int:
        paginator = _client().get_paginator("list_jobs")
        return sum(
            len(page["jobSummaryList"])
            for state in ACTIVE_STATES
            for page in paginator.paginate(jobQueue=self.job_queue, jobStatus=state)
        )

    def submit(self, count: int) -> list[str]:
        """Submit `count` worker jobs; their ids."""
        return [
            _client().submit_job(
                jobName=f"voxelpipe-gpu-worker-{uuid.uuid4().hex[:12]}",
                jobQueue=self.job_queue,
                jobDefinition=self.job_definition,
            )["jobId"]
            for _ in range(count)
        ]
