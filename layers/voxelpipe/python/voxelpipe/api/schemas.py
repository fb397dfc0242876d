"""Request and response bodies of the query API (they make its OpenAPI document)."""

from __future__ import annotations

import os
from datetime import date, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, HttpUrl, field_validator, model_validator

from voxelpipe.destinations import NAME_PATTERN as DESTINATION_NAME_PATTERN
from voxelpipe.inference.registry import MAX_MODEL_BYTES, MODEL_NAME_PATTERN, SHA256_PATTERN, ModelScope
from voxelpipe.inference.spec import ModelSpec, lambda_size_problem
from voxelpipe.messages import Priority
from voxelpipe.reference_kinds import ReferenceKind, ReferenceMetadata
from voxelpipe.references import NAME_PATTERN as REFERENCE_NAME_PATTERN
from voxelpipe.references import SHA256_PATTERN as REFERENCE_SHA256_PATTERN
from voxelpipe.references import ReferenceScope
from voxelpipe.rejections import Rejected
from voxelpipe.upload_files import check_upload_name
from voxelpipe.webhook_urls import check_webhook_url
from voxelpipe.wiring import EnvVar

MAX_FILES = 5000  # a DICOM series of up to 5000 objects (or one .zip)


class Sex(StrEnum):
    FEMALE = "F"
    MALE = "M"
    OTHER = "O"


# A pseudonymous subject reference, as CreateStudy takes it and /subjects/{ref} names it.
SUBJECT_REF_PATTERN = r"^[A-Za-z0-9._-]{1,64}$"


class FileDeclaration(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="the file's name, as it will be uploaded", examples=["t1w.nii.gz"])
    size: int = Field(gt=0, description="its exact size in bytes")

    @field_validator("name")
    @classmethod
    def plain_name(cls, name: str) -> str:
        try:
            return check_upload_name(name)
        except Rejected as rejected:
            raise ValueError(rejected.detail) from rejected


class CreateStudy(BaseModel):
    model_config = ConfigDict(extra="forbid")

    subject_ref: str | None = Field(
        default=None,
        pattern=SUBJECT_REF_PATTERN,
        description="a pseudonymous subject reference (never a name or MRN)",
    )
    age: float | None = Field(default=None, ge=0, le=130, description="age in years at the scan")
    sex: Sex | None = None
    scan_date: date | None = Field(
        default=None,
        description="the scan's date (YYYY-MM-DD); needs subject_ref. Stored only shifted by the "
        "subject's secret offset, which keeps intervals between its scans exact (docs/subjects.md)",
    )
    analyses: list[str] = Field(default_factory=lambda: ["qc"], min_length=1, examples=[["qc"]])
    priority: Priority = Priority.NORMAL
    parameters: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="per requested analysis, its parameters, e.g. "
        '{"normative": {"reference_table": "<CSV text>"}} (see GET /analyses)',
    )
    webhook_url: HttpUrl | None = Field(
        default=None,
        description="https URL told of every status change, in signed POSTs (docs/operations.md): "
        "its host a name (not an IP address) that resolves to public addresses only, no user:password@; "
        "http://localhost is accepted only with development tokens",
    )
    destinations: list[Annotated[str, Field(pattern=DESTINATION_NAME_PATTERN)]] = Field(
        default_factory=list,
        max_length=20,
        description="names of the tenant's destinations its DICOM outputs are delivered to once "
        "COMPLETED, beside those its routing rules name (docs/deliveries.md)",
    )
    format: Literal["nifti", "dicom"] = Field(
        default="nifti",
        description="nifti: one .nii/.nii.gz file; dicom: the series' files, or one .zip of them",
    )
    files: list[FileDeclaration] = Field(min_length=1, max_length=MAX_FILES)

    @model_validator(mode="after")
    def one_nifti_file(self) -> CreateStudy:
        if self.format == "nifti" and len(self.files) != 1:
            raise ValueError("a NIfTI study is one file; declare a DICOM series with format 'dicom'")
        names = [f.name for f in self.files]
        if len(set(names)) != len(names):
            raise ValueError("file names must be unique within a study")
        return self

    @field_validator("webhook_url")
    @classmethod
    def reachable_publicly(cls, url: HttpUrl | None) -> HttpUrl | None:
        # https, no userinfo, a host name whose every address is public (voxelpipe.webhooks);
        # InvalidWebhookUrl is a ValueError: a 422 naming webhook_url.
        if url is not None:
            check_webhook_url(str(url), allow_local=os.environ.get(EnvVar.AUTH_MODE) == "dev")
        return url


class PartTarget(BaseModel):
    part_number: int
    url: str


class UploadTarget(BaseModel):
    file: str
    key: str
    method: Literal["post", "multipart"]
    expires_at: datetime
    url: str | None = Field(default=None, description="post: the form's action URL")
    fields: dict[str, str] | None = Field(default=None, description="post: the form fields, before `file`")
    upload_id: str | None = None
    part_size: int | None = None
    parts: list[PartTarget] | None = Field(default=None, description="multipart: PUT each part to its URL")
    complete_url: str | None = Field(default=None, description="multipart: POST the parts' ETags here")


class StudyCreated(BaseModel):
    study_id: str
    status: str
    uploads: list[UploadTarget]
    webhook_secret: str | None = Field(
        default=None,
        description="with a webhook_url: the key its POSTs are signed with (HMAC-SHA256), shown only here",
    )


class StepView(BaseModel):
    step: str
    status: str
    progress: int
    started_at: datetime
    finished_at: datetime | None = None
    duration_ms: float | None = None
    error: dict[str, Any] | None = None


class DeclaredFile(BaseModel):
    name: str = Field(description="the file's name as the uploader declared it (shown only to its tenant)")
    object: str = Field(description="the name it is stored under: keys, results and audit rows use this")
    size: int


class SeriesDecisionView(BaseModel):
    """What the tenant's routing rules decided for a series (docs/rules.md)."""

    selected: bool
    action: str = Field(description="process, discard, or none (no rule matched)")
    rule: str | None = Field(default=None, description="the rule that decided; none when no rule matched")
    analyses: list[str] | None = None
    priority: str | None = None
    destinations: list[str] = Field(default_factory=list)
    explanation: list[str] = Field(default_factory=list, description="each rule evaluated, and why")


class ExamSeriesView(BaseModel):
    """One series of a DICOM exam, with the decision its routing made."""

    series_instance_uid: str = Field(description="pseudonymous, as the de-identified objects carry it")
    series_number: int | float | None = None
    modality: str
    series_class: str | None = Field(default=None, description="T1, T2, FLAIR, DWI, LOCALIZER, ...")
    instances: int
    tags: dict[str, Any] = Field(default_factory=dict, description="the routing attributes kept (no PHI)")
    decision: SeriesDecisionView
    study_id: str | None = Field(default=None, description="the study that processes it, when selected")


class StudyView(BaseModel):
    study_id: str
    format: str
    status: str
    attempt: int
    analyses: list[str]
    priority: str
    created_at: datetime
    updated_at: datetime
    reason: str | None = None
    reason_detail: str | None = None
    error: dict[str, Any] | None = None
    subject: dict[str, Any] | None = None
    input: dict[str, Any] | None = None
    files: list[DeclaredFile] = Field(default_factory=list, description="the files the study declared")
    steps: list[StepView] = Field(default_factory=list)
    cost: StudyCost | None = Field(
        default=None, description="once COMPLETED: resource use and estimated cost"
    )
    report: StudyReport | None = Field(
        default=None, description="once COMPLETED: the study report, HTML and PDF (docs/report.md)"
    )
    source: str | None = Field(
        default=None, description="how it arrived: upload, stow, c-store, or routed (from an exam)"
    )
    exam_id: str | None = Field(default=None, description="a routed study: the exam study it came from")
    series: list[ExamSeriesView] = Field(
        default_factory=list,
        description="a DICOM exam: each series, with what the routing rules decided (docs/dicom.md)",
    )
    rule_set_version: int | None = Field(
        default=None, description="the tenant's rule set version that routed the exam (none: the default)"
    )
    scan_date: date | None = Field(
        default=None, description="the scan's date, shifted by its subject's offset (docs/subjects.md)"
    )


class ReportFile(BaseModel):
    status: str = Field(description="available, or unavailable (the report could not be made: see error)")
    url: str | None = Field(default=None, description="a short-lived presigned GET when available")
    error: str | None = None


class StudyReport(BaseModel):
    """The report of a completed study: links expire at `expires_at` (GET the study again for new ones)."""

    html: ReportFile
    pdf: ReportFile
    expires_at: datetime | None = None


class StudyCost(BaseModel):
    """What a completed attempt used, measured, and its estimated cost (docs/operations.md)."""

    lambda_gb_seconds: float
    lambda_gb_seconds_by_step: dict[str, float]
    gpu_seconds: float
    requests: dict[str, int] = Field(
        description="lambda_invocations, state_transitions, s3_gets, s3_puts, events (estimated counts)"
    )
    estimated_usd: float
    prices: dict[str, str] = Field(description="the price table used: region and as_of date")


class StudyPage(BaseModel):
    items: list[StudyView]
    next_cursor: str | None = None


class SubjectView(BaseModel):
    """A tenant's pseudonymous subject, summarised from its studies (docs/subjects.md)."""

    subject_ref: str
    sex: str | None = None
    age: float | None = Field(default=None, description="years, at its latest study that says")
    study_count: int = Field(description="how many studies it has (deleted ones not counted)")
    first_scan_date: date | None = Field(default=None, description="shifted, as every stored date")
    last_scan_date: date | None = None
    created_at: datetime
    updated_at: datetime


class SubjectPage(BaseModel):
    items: list[SubjectView]
    next_cursor: str | None = None


class SubjectStudy(BaseModel):
    """One study of a subject, as the subject's page lists it."""

    study_id: str
    status: str
    scan_date: date | None = Field(default=None, description="shifted by the subject's offset")
    age: float | None = None
    analyses: list[str]
    created_at: datetime


class SubjectDetail(SubjectView):
    studies: list[SubjectStudy] = Field(description="its studies, oldest first (scan date, then creation)")


class Artifact(BaseModel):
    path: str
    url: str


class ReprocessStudy(BaseModel):
    """What a reprocess may change (each optional: the study's own is kept), checked as POST /studies
    checks it."""

    model_config = ConfigDict(extra="forbid")

    analyses: list[str] | None = Field(default=None, min_length=1, examples=[["qc", "regional"]])
    parameters: dict[str, dict[str, Any]] | None = Field(
        default=None, description="per requested analysis, its parameters (see GET /analyses)"
    )
    priority: Priority | None = None


class AttemptView(BaseModel):
    """One attempt of a study: the latest is the study's current one."""

    attempt: int
    latest: bool
    status: str
    analyses: list[str]
    parameters: dict[str, Any]
    priority: str | None = None
    summary: dict[str, Any] | None = None
    results_key: str | None = None
    reason: str | None = None
    reason_detail: str | None = None
    error: dict[str, Any] | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None


class AttemptList(BaseModel):
    study_id: str
    items: list[AttemptView]


class StudyResults(BaseModel):
    study_id: str
    attempt: int
    results: dict[str, Any]
    artifacts: list[Artifact]
    expires_at: datetime


class CreateModel(BaseModel):
    """A model version to register (admin: the tenant's own; operator: deployment-wide too); its file
    is uploaded to the returned target."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(
        pattern=MODEL_NAME_PATTERN,
        description="lower-case letters, digits and '-'; the analysis is `model:NAME`",
        examples=["lesion-seg"],
    )
    spec: ModelSpec = Field(description="the model's input spec (SPEC.json; see docs/models.md)")
    size: int = Field(gt=0, le=MAX_MODEL_BYTES, description="the model file's exact size in bytes")
    sha256: str | None = Field(
        default=None, pattern=SHA256_PATTERN, description="the file's SHA-256 (hex), checked on completion"
    )
    scope: ModelScope = Field(
        default=ModelScope.TENANT,
        description="tenant: the caller's tenant's own model; deployment: every tenant's to use "
        "(operator only)",
    )

    @model_validator(mode="after")
    def _runtime_takes_the_size(self) -> CreateModel:
        problem = lambda_size_problem(self.spec, self.size)
        if problem is not None:
            raise ValueError(problem)
        return self


class CompleteModel(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: int | None = Field(default=None, ge=1, description="default: the newest version")
    scope: ModelScope = Field(
        default=ModelScope.TENANT, description="deployment: a deployment-wide model (operator only)"
    )


class ModelView(BaseModel):
    name: str
    version: int
    scope: ModelScope = Field(description="tenant: the caller's tenant's own; deployment: deployment-wide")
    analysis: str = Field(description="the analysis name that runs it: model:NAME")
    format: str
    kind: str = Field(description="segmentation, regression or classification")
    runtime: str = Field(description="where model:NAME runs: gpu (the GPU workers) or lambda")
    status: str
    size: int
    sha256: str | None = None
    spec: dict[str, Any]
    created_at: datetime
    ready_at: datetime | None = None
    retired_at: datetime | None = None


class ModelCreated(BaseModel):
    model: ModelView
    upload: UploadTarget


class ModelPage(BaseModel):
    items: list[ModelView]


class ReferenceFileDeclaration(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: str = Field(
        description="which of the kind's files: atlas label_map and labels; norms table",
        examples=["label_map"],
    )
    size: int = Field(gt=0, description="its exact size in bytes")
    sha256: str | None = Field(
        default=None, pattern=REFERENCE_SHA256_PATTERN, description="its SHA-256 (hex), checked on completion"
    )


class CreateReference(ReferenceMetadata):
    """A version of reference data to register: its metadata (licence, citation, commercial use,
    space, description: ReferenceMetadata's fields), name, files and scope; each file is uploaded
    to its returned target."""

    model_config = ConfigDict(extra="forbid", frozen=False)

    name: str = Field(
        pattern=REFERENCE_NAME_PATTERN,
        description="lower-case letters, digits and '-'; studies name it in their parameters",
        examples=["my-atlas"],
    )
    files: list[ReferenceFileDeclaration] = Field(min_length=1, max_length=4)
    scope: ReferenceScope = Field(
        default=ReferenceScope.TENANT,
        description="tenant: the caller's tenant's own (atlases); deployment: every tenant's (operator "
        "only; norms tables are always deployment-wide)",
    )


class CompleteReference(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: int | None = Field(default=None, ge=1, description="default: the newest version")
    scope: ReferenceScope = Field(
        default=ReferenceScope.TENANT, description="deployment: deployment-wide data (operator only)"
    )


class ReferenceFileView(BaseModel):
    size: int
    sha256: str | None = None


class ReferenceView(BaseModel):
    kind: ReferenceKind
    name: str
    version: int
    scope: ReferenceScope = Field(
        description="tenant: the caller's tenant's own; deployment: deployment-wide"
    )
    status: str
    licence: str
    citation: str
    commercial_use: bool
    space: str | None = None
    description: str | None = None
    files: dict[str, ReferenceFileView]
    summary: dict[str, Any] | None = Field(default=None, description="what verification found in the files")
    created_at: datetime
    ready_at: datetime | None = None
    retired_at: datetime | None = None


class ReferenceCreated(BaseModel):
    reference: ReferenceView
    uploads: dict[str, UploadTarget] = Field(description="by file role: where to upload it")


class ReferencePage(BaseModel):
    items: list[ReferenceView]
