"""Messages between the pipeline's steps: SQS bodies and state machine payloads."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any
from urllib.parse import unquote_plus

from pydantic import BaseModel, ConfigDict, Field

from voxelpipe.wiring import Runtime


class Priority(StrEnum):
    HIGH = "high"
    NORMAL = "normal"
    # Bulk reprocessing (pipeline/batches.py): below normal, so that clinical work goes first.
    LOW = "low"


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class WorkItem(_Message):
    """A validated study attempt waiting for its execution (the work queues' message body)."""

    study_id: str
    attempt: int = Field(ge=1)
    tenant: str
    input_key: str
    analyses: list[str] = Field(min_length=1)
    priority: Priority = Priority.NORMAL


class ReferencePin(_Message):
    """The exact version of registered reference data an analysis runs with, fixed at dispatch
    (voxelpipe.references.pin_references), so that the run is reproducible. `problem` says why
    none could be fixed (no READY version left, the version named retired): the analysis then
    fails with it."""

    kind: str
    name: str
    owner: str | None = None
    version: int | None = None
    problem: str | None = None


class PriorPin(_Message):
    """The subject's earlier study a `longitudinal` analysis compares this one with, fixed at
    dispatch (voxelpipe.pipeline.prior_pin): which study and which of its attempts (RunAnalysis
    refuses it when that is no longer what the study holds), and the years between the two scans
    from their shifted scan dates (365.25-day years; None when either has no date)."""

    study_id: str
    attempt: int = Field(ge=1)
    interval_years: float | None = None


class AnalysisRequest(_Message):
    name: str
    version: str
    runtime: Runtime
    parameters: dict[str, Any] = Field(default_factory=dict)
    # A `model:NAME` analysis: whose model NAME dispatch chose (the study's tenant, or the
    # deployment's); the worker loads exactly (model_owner, NAME, version). None for the catalogue's.
    model_owner: str | None = None
    # The analyses it uses (Analysis.uses) that this execution runs before it: their outputs are
    # among its requirements.
    uses: list[str] = Field(default_factory=list)
    # The reference data its parameters name, by parameter ("atlas", "norms"), versions fixed.
    references: dict[str, ReferencePin] = Field(default_factory=dict)
    # `longitudinal`: the subject's earlier study it compares with; None when there is none.
    prior: PriorPin | None = None


class ExecutionInput(_Message):
    """The state machine's input: one study attempt.

    `analyses` lists every analysis to run (requirements included); `stages` groups them so
    that each stage needs only earlier ones: stages run in order, one stage's analyses in parallel.
    """

    study_id: str
    attempt: int = Field(ge=1)
    tenant: str
    input_key: str
    analyses: list[AnalysisRequest] = Field(min_length=1)
    stages: list[list[AnalysisRequest]] = Field(min_length=1)
    subject: dict[str, Any] | None = None


class PreparedVolume(_Message):
    """Prepare's result: where the canonical volume is, and what it knows of the original."""

    volume_key: str
    original_orientation: tuple[str, str, str]
    original_shape: list[int]
    original_affine: list[list[float]]
    shape: list[int]
    voxel_size_mm: list[float]
    duration_ms: float


class AnalysisTask(_Message):
    """One item of a stage's Map: an analysis of a prepared volume."""

    study_id: str
    attempt: int
    analysis: AnalysisRequest
    volume: PreparedVolume
    subject: dict[str, Any] | None = None


class AnalysisResult(_Message):
    analysis: str
    version: str
    parameters: dict[str, Any]
    measures: dict[str, Any]
    artifacts: list[str]
    intermediates: list[str] = Field(default_factory=list)
    duration_ms: float


class FinalizeInput(BaseModel):
    """The whole state after the Map (extra keys of the state are ignored)."""

    study_id: str
    attempt: int
    tenant: str
    input_key: str
    analyses: list[AnalysisRequest]
    prepared: PreparedVolume
    analysis_results: list[list[AnalysisResult]]  # by stage

    @property
    def results(self) -> list[AnalysisResult]:
        return [result for stage in self.analysis_results for result in stage]


class StepError(BaseModel):
    """What a Catch puts in `$.error`."""

    model_config = ConfigDict(populate_by_name=True)

    error: str = Field(alias="Error")
    cause: str | None = Field(default=None, alias="Cause")


class FailureInput(BaseModel):
    """MarkFailed's input: the state as it was when a step failed, with the error."""

    study_id: str
    attempt: int
    error: StepError


class _S3Bucket(BaseModel):
    name: str


class _S3Object(BaseModel):
    key: str
    size: int | None = None
    eTag: str | None = None
    versionId: str | None = None
    sequencer: str | None = None


class _S3Entity(BaseModel):
    bucket: _S3Bucket
    object: _S3Object


class ObjectCreatedRecord(BaseModel):
    eventName: str
    s3: _S3Entity


class ObjectCreatedNotification(BaseModel):
    """An S3 event notification, reduced to the fields ingest uses.

    Powertools' S3Model also requires identity and request fields that ingest never reads (and
    that moto leaves out); asking only for what is used keeps the contract honest.
    """

    Records: list[ObjectCreatedRecord]

    def uploads(self) -> list[UploadedObject]:
        """Each object the notification announces, named as ingest's idempotency key names it."""
        return [
            UploadedObject(
                bucket=record.s3.bucket.name,
                # S3 URL-encodes keys in notifications (a space arrives as '+').
                key=unquote_plus(record.s3.object.key),
                version=record.s3.object.versionId or record.s3.object.eTag or "",
            )
            for record in self.Records
        ]


@dataclass(frozen=True)
class UploadedObject:
    """One object that landed; (bucket, key, version) is its idempotency key."""

    bucket: str
    key: str
    version: str
