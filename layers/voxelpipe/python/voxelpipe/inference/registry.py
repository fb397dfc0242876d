"""The model registry: registered models' versions in DynamoDB (ModelRecord), files in S3.

Every model has an owner: the tenant whose admin registered it, or the deployment
(keys.DEPLOYMENT_OWNER) for a model an operator published deployment-wide. A tenant sees, runs and
changes only its own models, and sees and runs (never changes) the deployment-wide ones; when both
have a READY model of the same name, the tenant's own is the one `model:NAME` runs for it.

A version is an increasing integer per owner and name (1, 2, ...): readable, ordered (the newest
READY one is what `model:NAME` runs), and independent of the file's bytes, whose SHA-256 is
recorded beside it for integrity. Registering is two calls around a presigned upload:

1. `register_model` checks the name and spec and adds version n+1, PENDING;
2. the client uploads the file to models/{owner}/{name}/{n+1}/model.{pt|onnx};
3. `complete_model` checks the object (size, SHA-256, TorchScript's zip signature), writes
   model.json beside it (what the workers load: see inference.models) and marks it READY.

`retire_model` takes a version (or every version) out of use: it is marked RETIRED, so that
`model:NAME` runs the newest READY version left (or is no longer offered), and its files are
deleted. Its record stays, so the results that name it still say which file it was (sha256).

This module needs no torch: the API and dispatch use it.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Collection, Iterable
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from botocore.exceptions import ClientError
from pynamodb.exceptions import PutError
from pynamodb.expressions.update import Action

from voxelpipe.adapters.dynamodb import refused_by_condition
from voxelpipe.adapters.storage import Storage
from voxelpipe.analyses.catalogue import Analysis, AnalysisInput, AnalysisOutput
from voxelpipe.inference.spec import (
    LABELS_FILE,
    MANIFEST_FILE,
    ModelManifest,
    ModelSpec,
    RegressionOutput,
    analysis_name,
    lambda_size_problem,
    model_name,
)
from voxelpipe.keys import DEPLOYMENT_OWNER, is_tenant, model_key, model_prefix
from voxelpipe.records import ModelRecord

MODEL_NAME_PATTERN = r"^[a-z0-9][a-z0-9-]{0,62}$"
_MODEL_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
SHA256_PATTERN = r"^[0-9a-f]{64}$"
MAX_MODEL_BYTES = 5 * 1024**3  # one presigned POST (S3's limit for a single upload)
_ZIP_SIGNATURE = b"PK\x03\x04"  # a TorchScript archive is a zip file


class ModelStatus(StrEnum):
    PENDING = "PENDING"  # registered, its file not yet uploaded and verified
    READY = "READY"
    RETIRED = "RETIRED"  # taken out of use, its files deleted; the record stays for provenance


class ModelScope(StrEnum):
    """Who a model belongs to, as the API shows it."""

    TENANT = "tenant"  # the caller's tenant's own
    DEPLOYMENT = "deployment"  # published by an operator, usable by every tenant


class InvalidModelName(ValueError):
    def __init__(self, name: str) -> None:
        super().__init__(f"{name!r} is not a model name: lower-case letters, digits and '-', up to 63")


class ModelNotFound(LookupError):
    pass


class ModelUploadMismatch(ValueError):
    """The uploaded file is missing or not what was declared."""


class ModelRetired(ValueError):
    """The version was retired: it cannot be completed (register a new version instead)."""


class ModelTooLargeForLambda(ValueError):
    """A model whose spec says runtime lambda, over spec.MAX_LAMBDA_MODEL_BYTES."""


def check_runtime_fits(spec: ModelSpec, size: int) -> None:
    problem = lambda_size_problem(spec, size)
    if problem is not None:
        raise ModelTooLargeForLambda(problem)


def check_model_name(name: str) -> str:
    if not _MODEL_NAME.fullmatch(name):
        raise InvalidModelName(name)
    return name


def owner_for(scope: ModelScope, tenant: str) -> str:
    """The owner of a model registered in `scope` by a caller of `tenant`."""
    return DEPLOYMENT_OWNER if scope == ModelScope.DEPLOYMENT else tenant


def scope_of(owner: str) -> ModelScope:
    """The scope of a model of `owner`."""
    return ModelScope.DEPLOYMENT if owner == DEPLOYMENT_OWNER else ModelScope.TENANT


def _owners(tenant: str) -> tuple[str, ...]:
    """Whose models a tenant sees: its own, then the deployment's."""
    return (tenant, DEPLOYMENT_OWNER) if is_tenant(tenant) else (DEPLOYMENT_OWNER,)


def _now() -> datetime:
    return datetime.now(UTC)


def _versions(owner: str, name: str, version: int | None = None) -> list[ModelRecord]:
    """Every version of the owner's model `name` (only `version`, when given), newest first; none
    for a name or owner that cannot be a model's."""
    if not _MODEL_NAME.fullmatch(name) or not (owner == DEPLOYMENT_OWNER or is_tenant(owner)):
        return []
    records = ModelRecord.query(
        owner,
        ModelRecord.name_version.startswith(f"{name}#"),
        scan_index_forward=False,
        consistent_read=True,
    )
    return [record for record in records if version is None or int(record.version) == version]


def _not_found(name: str, version: int | None) -> ModelNotFound:
    return ModelNotFound(f"no model {name}" + ("" if version is None else f" version {version}"))


def has_model(owner: str, name: str) -> bool:
    """Whether `owner` has any version of `name`."""
    return bool(_versions(owner, name))


def register_model(
    owner: str,
    name: str,
    spec: ModelSpec,
    size: int,
    sha256: str | None = None,
    *,
    actor: str | None = None,
) -> ModelRecord:
    """A new PENDING version of the owner's `name` (the next integer); its file goes to
    `record.object_key`."""
    check_model_name(name)
    if not 0 < size <= MAX_MODEL_BYTES:
        raise ValueError(f"size must be 1 to {MAX_MODEL_BYTES} bytes")
    if sha256 is not None and not re.fullmatch(SHA256_PATTERN, sha256):
        raise ValueError("sha256 must be 64 lower-case hex digits")
    check_runtime_fits(spec, size)
    for _ in range(5):  # two registrations at once: one gets the next number, the other retries
        latest = next(iter(_versions(owner, name)), None)
        version = 1 if latest is None else int(latest.version) + 1
        record = ModelRecord(
            owner,
            ModelRecord.sort_key(name, version),
            name=name,
            version=version,
            format=spec.format,
            spec=spec.model_dump(mode="json"),
            object_key=model_key(owner, name, str(version), spec.model_file),
            size=size,
            sha256=sha256,
            status=ModelStatus.PENDING.value,
            created_at=_now(),
            created_by=actor,
        )
        try:
            record.save(condition=ModelRecord.name_version.does_not_exist())
            return record
        except PutError as error:
            if not refused_by_condition(error):
                raise
    raise RuntimeError(f"could not allocate a version of model {name}")


def get_model(owner: str, name: str, version: int | None = None) -> ModelRecord:
    """A version of the owner's `name` (the newest when `version` is None); ModelNotFound if none."""
    versions = _versions(owner, name, version)
    if not versions:
        raise _not_found(name, version)
    return versions[0]


def complete_model(owner: str, name: str, storage: Storage, version: int | None = None) -> ModelRecord:
    """Verify the uploaded file of a PENDING version (the newest by default) and mark it READY.

    Completing a READY version again changes nothing. ModelUploadMismatch says what is wrong
    with the upload (missing, wrong size, wrong SHA-256, not a TorchScript archive);
    ModelTooLargeForLambda that the spec's runtime cannot take it.
    """
    record = get_model(owner, name, version)
    if record.status == ModelStatus.READY:
        return record
    if record.status == ModelStatus.RETIRED:
        raise ModelRetired(f"model {name} version {int(record.version)} was retired; register a new version")
    try:
        info = storage.head(record.object_key)
    except ClientError as error:
        raise ModelUploadMismatch(f"nothing was uploaded to {record.object_key} yet") from error
    if info.size != int(record.size):
        raise ModelUploadMismatch(f"{info.size} bytes were uploaded; {int(record.size)} were declared")
    spec = ModelSpec.model_validate(record.spec)
    check_runtime_fits(spec, info.size)
    if spec.format == "torchscript" and storage.read(record.object_key, 4) != _ZIP_SIGNATURE:
        raise ModelUploadMismatch("a TorchScript model is a zip archive (torch.jit.save); this is not")
    measured = storage.sha256(record.object_key)
    if record.sha256 is not None and measured != record.sha256:
        raise ModelUploadMismatch(f"the file's sha256 is {measured}; {record.sha256} was declared")
    manifest = ModelManifest(
        owner=owner,
        name=name,
        version=str(int(record.version)),
        spec=spec,
        sha256=measured,
        size=int(record.size),
    )
    storage.write(
        model_key(owner, name, manifest.version, MANIFEST_FILE),
        manifest.model_dump_json().encode(),
        "application/json",
    )
    record.update(
        actions=[
            ModelRecord.status.set(ModelStatus.READY.value),
            ModelRecord.sha256.set(measured),
            ModelRecord.ready_at.set(_now()),
        ]
    )
    return record


def retire_model(
    owner: str, name: str, storage: Storage, version: int | None = None, *, actor: str | None = None
) -> list[ModelRecord]:
    """Retire a version of the owner's `name` (every version when `version` is None); the versions
    retired.

    Marked RETIRED first, so that no dispatch picks it from then on, then its files are deleted
    (every S3 version of them). A study already dispatched to it fails with the model unavailable
    unless a worker has it loaded. Retiring again changes nothing but deletes any file left.
    """
    versions = _versions(owner, name, version)
    if not versions:
        raise _not_found(name, version)
    for record in versions:
        if record.status != ModelStatus.RETIRED:
            actions: list[Action] = [
                ModelRecord.status.set(ModelStatus.RETIRED.value),
                ModelRecord.retired_at.set(_now()),
            ]
            if actor is not None:
                actions.append(ModelRecord.retired_by.set(actor))
            record.update(actions=actions)
        storage.delete_all_versions(model_prefix(owner, name, str(int(record.version))))
    return versions


def publish_model(
    owner: str, name: str, data: bytes, spec: ModelSpec, storage: Storage, *, actor: str | None = None
) -> ModelRecord:
    """Register, store and complete a model in one go, in process (the local cloud, tests, bench)."""
    record = register_model(owner, name, spec, len(data), hashlib.sha256(data).hexdigest(), actor=actor)
    storage.write(record.object_key, data)
    return complete_model(owner, name, storage, int(record.version))


def list_models(tenant: str, status: ModelStatus | None = None) -> list[ModelRecord]:
    """Every version of every model `tenant` sees (its own, then the deployment's, by name; newest
    version first). Two queries: the registry is small."""
    records = [
        record
        for owner in _owners(tenant)
        for record in ModelRecord.query(owner, consistent_read=True)
        if status is None or record.status == status.value
    ]
    order = {owner: index for index, owner in enumerate(_owners(tenant))}
    return sorted(records, key=lambda r: (r.name, order[r.owner], -int(r.version)))


def ready_models(tenant: str, names: Iterable[str] | None = None) -> dict[str, ModelRecord]:
    """What `model:NAME` runs for `tenant`, by NAME (only those in `names`, when given): the newest
    READY version of the tenant's own model NAME, else of the deployment-wide one."""
    wanted = None if names is None else set(names)
    chosen: dict[str, ModelRecord] = {}
    for record in list_models(tenant, ModelStatus.READY):  # own before the deployment's, newest first
        if wanted is None or record.name in wanted:
            chosen.setdefault(record.name, record)
    return chosen


def _runs_through_inference(inp: AnalysisInput) -> AnalysisOutput:
    raise RuntimeError(
        "model:NAME analyses run through voxelpipe.inference.tasks (run_model_tasks on the GPU "
        "workers, run_model_analysis in RunAnalysis)"
    )


def _produces(spec: ModelSpec) -> str:
    """What a model's analysis gives, in words (GET /analyses' description)."""
    if spec.kind == "regression":
        assert spec.outputs is not None
        return "scalars " + ", ".join(f"{output.name} ({output.unit})" for output in spec.outputs)
    if spec.kind == "classification":
        assert spec.classes is not None
        return f"the probabilities of classes {', '.join(spec.classes)}"
    labels = ", ".join(name for value, name in spec.labels.items() if value)
    return f"a label map in the input's space ({labels})"


def model_analysis(record: ModelRecord) -> Analysis:
    """The `model:NAME` analysis of a READY model version, as the catalogue describes analyses; it
    runs where the spec says (runtime: the GPU workers by default, else RunAnalysis)."""
    spec = ModelSpec.model_validate(record.spec)
    return Analysis(
        name=analysis_name(record.name),
        version=str(int(record.version)),
        owner=record.owner,
        runtime=spec.runtime,
        description=f"Registered {spec.format} {spec.kind} model {record.name}: {_produces(spec)}",
        run=_runs_through_inference,
        outputs=(LABELS_FILE,) if spec.kind == "segmentation" else (),
    )


def _describe_output(output: RegressionOutput) -> dict[str, Any]:
    described: dict[str, Any] = {"name": output.name, "unit": output.unit}
    if output.gap is not None:
        described.update(compare_to=output.compare_to, gap=output.gap)
    return described


def describe_model_analysis(record: ModelRecord, gpu_analyses: Collection[str] = ()) -> dict[str, Any]:
    """GET /analyses' entry for a READY model: the analysis, what it produces (labels, outputs with
    their units, or classes) and its spec."""
    spec = ModelSpec.model_validate(record.spec)
    produces: dict[str, Any]
    if spec.kind == "regression":
        assert spec.outputs is not None
        produces = {"outputs": [_describe_output(output) for output in spec.outputs]}
    elif spec.kind == "classification":
        produces = {"classes": list(spec.classes or ())}
    else:
        produces = {"labels": {str(value): name for value, name in spec.labels.items()}}
    return {
        **model_analysis(record).describe(gpu_analyses),
        "scope": scope_of(record.owner).value,
        "kind": spec.kind,
        **produces,
        "spec": spec.model_dump(mode="json"),
    }


def model_analyses(names: Iterable[str], tenant: str) -> dict[str, Analysis]:
    """The `model:NAME` analyses among `names` that `tenant` may run (ready_models: its own model,
    else a deployment-wide one, with a READY version), for `resolve`. Each names its model's owner,
    so that the workers load exactly that model.

    The registry is read only when a model analysis is asked for.
    """
    wanted = [name for name in (model_name(n) for n in names) if name is not None]
    if not wanted:
        return {}
    return {
        analysis_name(name): model_analysis(record) for name, record in ready_models(tenant, wanted).items()
    }
