"""The reference data registry: atlases and norms tables, versioned, in DynamoDB (ReferenceRecord)
with their files in S3. One registry for every kind (voxelpipe.reference_kinds says what each kind
is made of and how it is checked).

Ownership mirrors the model registry's: a version belongs to the tenant whose admin registered it
(kinds a tenant may own: atlases), or to the deployment (keys.DEPLOYMENT_OWNER) when an operator
published it. A tenant sees and uses its own and the deployment's; when both have a READY version
of one name, the tenant's own is used for it.

Versions are integers per (kind, owner, name), 1, 2, ...: registering is two calls around
presigned uploads, as for models:

1. `register_reference` checks the name, the declared facts (licence, citation, commercial use,
   an atlas's space) and the files' sizes, and adds version n+1, PENDING;
2. the client uploads each file to references/{kind}/{owner}/{name}/{n+1}/{file};
3. `complete_reference` checks the files (sizes, SHA-256, then the kind's own checks: an atlas's
   label map against its table, a norms table's rows), writes manifest.json beside them (what
   RunAnalysis loads) and marks the version READY. A failed check leaves it PENDING: upload
   corrected files and complete again.

`retire_reference` marks versions RETIRED and deletes their files; the records stay, so results
that name a version still say what it was.

Studies name reference data in their parameters (`parameters.regional.atlas`,
`parameters.normative.norms`, optionally with a version): `check_references` refuses, at
registration, a name the tenant has no READY version of; `pin_references` fixes the version at
dispatch (the newest READY one unless the study names one), so that a run is reproducible; and
`load_references` reads a pinned version's files for RunAnalysis.

No torch here: the API, dispatch and RunAnalysis use it.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Final

from botocore.exceptions import ClientError
from pydantic import BaseModel, ConfigDict, ValidationError
from pynamodb.exceptions import PutError
from pynamodb.expressions.update import Action

from voxelpipe.adapters.dynamodb import refused_by_condition
from voxelpipe.adapters.storage import Storage
from voxelpipe.analyses.catalogue import Analysis, ReferenceParameter
from voxelpipe.keys import DEPLOYMENT_OWNER, is_tenant, reference_key, reference_prefix
from voxelpipe.messages import ReferencePin
from voxelpipe.ports import ObjectStorage
from voxelpipe.records import ReferenceRecord
from voxelpipe.reference_kinds import (
    KINDS,
    ReferenceInvalid,
    ReferenceKind,
    ReferenceMetadata,
    check_metadata,
    materialise,
    verify_files,
)

__all__ = [
    "MANIFEST_FILE",
    "NAME_PATTERN",
    "ReferenceFile",
    "ReferenceInvalid",
    "ReferenceKind",
    "ReferenceManifest",
    "ReferenceMetadata",
    "ReferenceNotFound",
    "ReferenceRefused",
    "ReferenceRetired",
    "ReferenceScope",
    "ReferenceStatus",
    "ReferenceUnavailable",
    "ReferenceUploadMismatch",
    "check_references",
    "complete_reference",
    "get_reference",
    "list_references",
    "load_references",
    "pin_references",
    "publish_reference",
    "ready_reference",
    "register_reference",
    "retire_reference",
]

NAME_PATTERN: Final = r"^[a-z0-9][a-z0-9-]{0,62}$"
_NAME: Final = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
SHA256_PATTERN: Final = r"^[0-9a-f]{64}$"
MANIFEST_FILE: Final = "manifest.json"


class ReferenceStatus(StrEnum):
    PENDING = "PENDING"  # registered, its files not yet uploaded and verified
    READY = "READY"
    RETIRED = "RETIRED"  # taken out of use, its files deleted; the record stays for provenance


class ReferenceScope(StrEnum):
    """Who reference data belongs to, as the API shows it."""

    TENANT = "tenant"
    DEPLOYMENT = "deployment"


class ReferenceNotFound(LookupError):
    pass


class ReferenceUploadMismatch(ValueError):
    """An uploaded file is missing or not what was declared (size, SHA-256)."""


class ReferenceRetired(ValueError):
    """The version was retired: it cannot be completed (register a new version instead)."""


class ReferenceRefused(ValueError):
    """A study names reference data it cannot use; `field` names the parameter at fault."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class ReferenceUnavailable(RuntimeError):
    """The version an analysis was dispatched with cannot be loaded (retired, or never READY)."""


class ReferenceFile(BaseModel):
    """One stored file of a version, as the record and the manifest keep it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    key: str
    size: int
    sha256: str | None = None


class ReferenceManifest(BaseModel):
    """manifest.json, written when a version is verified: what RunAnalysis loads."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: ReferenceKind
    owner: str
    name: str
    version: int
    metadata: ReferenceMetadata
    files: dict[str, ReferenceFile]
    summary: dict[str, Any]


def check_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise ValueError(f"{name!r} is not a name: lower-case letters, digits and '-', up to 63")
    return name


def owner_for(scope: ReferenceScope, tenant: str) -> str:
    return DEPLOYMENT_OWNER if scope == ReferenceScope.DEPLOYMENT else tenant


def scope_of(owner: str) -> ReferenceScope:
    return ReferenceScope.DEPLOYMENT if owner == DEPLOYMENT_OWNER else ReferenceScope.TENANT


def _owners(tenant: str) -> tuple[str, ...]:
    """Whose reference data a tenant sees: its own, then the deployment's."""
    return (tenant, DEPLOYMENT_OWNER) if is_tenant(tenant) else (DEPLOYMENT_OWNER,)


def _now() -> datetime:
    return datetime.now(UTC)


def _versions(
    kind: ReferenceKind, owner: str, name: str, version: int | None = None
) -> list[ReferenceRecord]:
    """Every version of the owner's `name` of `kind` (only `version`, when given), newest first;
    none for a name or owner that cannot be one."""
    if not _NAME.fullmatch(name) or not (owner == DEPLOYMENT_OWNER or is_tenant(owner)):
        return []
    records = ReferenceRecord.query(
        owner,
        ReferenceRecord.kind_name_version.startswith(f"{kind}#{name}#"),
        scan_index_forward=False,
        consistent_read=True,
    )
    return [record for record in records if version is None or int(record.version) == version]


def _not_found(kind: ReferenceKind, name: str, version: int | None) -> ReferenceNotFound:
    return ReferenceNotFound(f"no {kind} {name}" + ("" if version is None else f" version {version}"))


def has_reference(kind: ReferenceKind, owner: str, name: str) -> bool:
    """Whether `owner` has any version of `name` of `kind`."""
    return bool(_versions(kind, owner, name))


def register_reference(
    kind: ReferenceKind,
    owner: str,
    name: str,
    metadata: ReferenceMetadata,
    files: Mapping[str, tuple[int, str | None]],
    *,
    actor: str | None = None,
) -> ReferenceRecord:
    """A new PENDING version of the owner's `name` of `kind` (the next integer). `files` maps each
    of the kind's file roles to (size in bytes, SHA-256 or None); each goes to
    `record.files[role]["key"]`. ValueError (ReferenceInvalid among them) says what is wrong."""
    spec = KINDS[kind]
    check_name(name)
    if owner != DEPLOYMENT_OWNER and not spec.tenant_owned:
        raise ReferenceInvalid(f"a {kind} table is deployment-wide data: only an operator registers one")
    check_metadata(kind, metadata)
    if set(files) != set(spec.files):
        raise ReferenceInvalid(f"a {kind} has the files {', '.join(sorted(spec.files))}; declare each once")
    for role, (size, sha256) in files.items():
        limit = spec.files[role].max_bytes
        if not 0 < size <= limit:
            raise ReferenceInvalid(f"{role}: size must be 1 to {limit} bytes")
        if sha256 is not None and not re.fullmatch(SHA256_PATTERN, sha256):
            raise ReferenceInvalid(f"{role}: sha256 must be 64 lower-case hex digits")
    for _ in range(5):  # two registrations at once: one gets the next number, the other retries
        latest = next(iter(_versions(kind, owner, name)), None)
        version = 1 if latest is None else int(latest.version) + 1
        stored = {
            role: ReferenceFile(
                key=reference_key(kind, owner, name, str(version), spec.files[role].filename),
                size=size,
                sha256=sha256,
            ).model_dump()
            for role, (size, sha256) in files.items()
        }
        record = ReferenceRecord(
            owner,
            ReferenceRecord.sort_key(kind, name, version),
            kind=kind.value,
            name=name,
            version=version,
            status=ReferenceStatus.PENDING.value,
            metadata=metadata.model_dump(mode="json"),
            files=stored,
            created_at=_now(),
            created_by=actor,
        )
        try:
            record.save(condition=ReferenceRecord.kind_name_version.does_not_exist())
            return record
        except PutError as error:
            if not refused_by_condition(error):
                raise
    raise RuntimeError(f"could not allocate a version of {kind} {name}")


def get_reference(kind: ReferenceKind, owner: str, name: str, version: int | None = None) -> ReferenceRecord:
    """A version of the owner's `name` (the newest when `version` is None); ReferenceNotFound."""
    versions = _versions(kind, owner, name, version)
    if not versions:
        raise _not_found(kind, name, version)
    return versions[0]


def record_files(record: ReferenceRecord) -> dict[str, ReferenceFile]:
    return {role: ReferenceFile.model_validate(entry) for role, entry in dict(record.files).items()}


def complete_reference(
    kind: ReferenceKind, owner: str, name: str, storage: Storage, version: int | None = None
) -> ReferenceRecord:
    """Verify the uploaded files of a PENDING version (the newest by default) and mark it READY.

    Completing a READY version again changes nothing. ReferenceUploadMismatch: a file missing or
    not as declared; ReferenceInvalid: the files are there but not usable (the message says why,
    e.g. the label values missing from the table); either way the version stays PENDING.
    """
    record = get_reference(kind, owner, name, version)
    if record.status == ReferenceStatus.READY:
        return record
    if record.status == ReferenceStatus.RETIRED:
        raise ReferenceRetired(
            f"{kind} {name} version {int(record.version)} was retired; register a new version"
        )
    declared = record_files(record)
    contents: dict[str, bytes] = {}
    for role, entry in declared.items():
        try:
            info = storage.head(entry.key)
        except ClientError as error:
            raise ReferenceUploadMismatch(f"{role}: nothing was uploaded to {entry.key} yet") from error
        if info.size != entry.size:
            raise ReferenceUploadMismatch(
                f"{role}: {info.size} bytes were uploaded; {entry.size} were declared"
            )
        contents[role] = storage.read(entry.key)
    measured = {role: hashlib.sha256(data).hexdigest() for role, data in contents.items()}
    for role, entry in declared.items():
        if entry.sha256 is not None and measured[role] != entry.sha256:
            raise ReferenceUploadMismatch(
                f"{role}: the file's sha256 is {measured[role]}; {entry.sha256} was declared"
            )
    summary = verify_files(kind, contents)
    files = {role: entry.model_copy(update={"sha256": measured[role]}) for role, entry in declared.items()}
    manifest = ReferenceManifest(
        kind=kind,
        owner=owner,
        name=name,
        version=int(record.version),
        metadata=ReferenceMetadata.model_validate(record.metadata),
        files=files,
        summary=summary,
    )
    storage.write(
        reference_key(kind, owner, name, str(int(record.version)), MANIFEST_FILE),
        manifest.model_dump_json().encode(),
        "application/json",
    )
    record.update(
        actions=[
            ReferenceRecord.status.set(ReferenceStatus.READY.value),
            ReferenceRecord.files.set({role: entry.model_dump() for role, entry in files.items()}),
            ReferenceRecord.summary.set(summary),
            ReferenceRecord.ready_at.set(_now()),
        ]
    )
    return record


def retire_reference(
    kind: ReferenceKind,
    owner: str,
    name: str,
    storage: Storage,
    version: int | None = None,
    *,
    actor: str | None = None,
) -> list[ReferenceRecord]:
    """Retire a version (every version when `version` is None); the versions retired.

    Marked RETIRED first, so that no dispatch picks it from then on, then its files are deleted
    (every S3 version). A study already dispatched to it fails with the version unavailable.
    Retiring again changes nothing but deletes any file left.
    """
    versions = _versions(kind, owner, name, version)
    if not versions:
        raise _not_found(kind, name, version)
    for record in versions:
        if record.status != ReferenceStatus.RETIRED:
            actions: list[Action] = [
                ReferenceRecord.status.set(ReferenceStatus.RETIRED.value),
                ReferenceRecord.retired_at.set(_now()),
            ]
            if actor is not None:
                actions.append(ReferenceRecord.retired_by.set(actor))
            record.update(actions=actions)
        storage.delete_all_versions(reference_prefix(kind, owner, name, str(int(record.version))))
    return versions


def publish_reference(
    kind: ReferenceKind,
    owner: str,
    name: str,
    metadata: ReferenceMetadata,
    files: Mapping[str, bytes],
    storage: Storage,
    *,
    actor: str | None = None,
) -> ReferenceRecord:
    """Register, store and complete a version in one go, in process (the local cloud, tests)."""
    declared = {role: (len(data), hashlib.sha256(data).hexdigest()) for role, data in files.items()}
    record = register_reference(kind, owner, name, metadata, declared, actor=actor)
    for role, entry in record_files(record).items():
        storage.write(entry.key, files[role])
    return complete_reference(kind, owner, name, storage, int(record.version))


def list_references(
    tenant: str, kind: ReferenceKind | None = None, status: ReferenceStatus | None = None
) -> list[ReferenceRecord]:
    """Every version of the reference data `tenant` sees (its own, then the deployment's; by kind
    and name, newest version first)."""
    records = [
        record
        for owner in _owners(tenant)
        for record in ReferenceRecord.query(
            owner,
            None if kind is None else ReferenceRecord.kind_name_version.startswith(f"{kind}#"),
            consistent_read=True,
        )
        if status is None or record.status == status.value
    ]
    order = {owner: index for index, owner in enumerate(_owners(tenant))}
    return sorted(records, key=lambda r: (r.kind, r.name, order[r.owner], -int(r.version)))


def ready_reference(
    kind: ReferenceKind, tenant: str, name: str, version: int | None = None
) -> ReferenceRecord | None:
    """What `name` means for `tenant`: the newest READY version (or READY `version`) of the
    tenant's own, else of the deployment's; None when neither has one."""
    for owner in _owners(tenant):
        ready = [r for r in _versions(kind, owner, name, version) if r.status == ReferenceStatus.READY]
        if ready:
            return ready[0]
    return None


def _named(
    analysis: Analysis, reference: ReferenceParameter, parameters: Mapping[str, Any]
) -> tuple[str, int | None] | None:
    """The (name, version) a study's parameters of `analysis` give for `reference`; None when they
    name none; ReferenceRefused for a name or version that cannot be one."""
    name = parameters.get(reference.parameter)
    version = parameters.get(reference.version_parameter)
    field = f"parameters.{analysis.name}.{reference.parameter}"
    if name is None:
        if version is not None:
            raise ReferenceRefused(
                f"parameters.{analysis.name}.{reference.version_parameter}",
                f"a version without a name: give {reference.parameter} too",
            )
        return None
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ReferenceRefused(field, f"{name!r} is not a {reference.kind} name")
    if version is not None and (isinstance(version, bool) or not isinstance(version, int) or version < 1):
        raise ReferenceRefused(
            f"parameters.{analysis.name}.{reference.version_parameter}",
            f"{version!r} is not a version (an integer from 1)",
        )
    return name, version


def check_references(
    analyses: Iterable[Analysis], parameters: Mapping[str, Mapping[str, Any]], tenant: str
) -> None:
    """ReferenceRefused (naming the parameter) when a study's parameters name reference data
    `tenant` has no READY version of (or a version that is not READY). The registry is read only
    for the analyses whose parameters name some."""
    for analysis in analyses:
        given = parameters.get(analysis.name) or {}
        for reference in analysis.references:
            named = _named(analysis, reference, given)
            if named is None:
                continue
            name, version = named
            if ready_reference(ReferenceKind(reference.kind), tenant, name, version) is None:
                which = f"{name}" if version is None else f"{name} version {version}"
                raise ReferenceRefused(
                    f"parameters.{analysis.name}."
                    + (reference.parameter if version is None else reference.version_parameter),
                    f"no {reference.kind} {which} is registered and READY for this tenant "
                    f"(see GET /references/{reference.kind})",
                )


def pin_references(analysis: Analysis, parameters: Mapping[str, Any], tenant: str) -> dict[str, ReferencePin]:
    """The versions `analysis` runs with, by parameter, for dispatch: the READY version the study
    named, else the newest READY one, of the tenant's own else the deployment's. A name that
    resolves to nothing is pinned with its `problem` (the analysis then fails with it), so that
    the study ends FAILED with the reason rather than stuck."""
    pins: dict[str, ReferencePin] = {}
    for reference in analysis.references:
        try:
            named = _named(analysis, reference, parameters)
        except ReferenceRefused as refused:
            pins[reference.parameter] = ReferencePin(
                kind=reference.kind, name=str(parameters.get(reference.parameter)), problem=str(refused)
            )
            continue
        if named is None:
            continue
        name, version = named
        record = ready_reference(ReferenceKind(reference.kind), tenant, name, version)
        if record is None:
            which = name if version is None else f"{name} version {version}"
            pins[reference.parameter] = ReferencePin(
                kind=reference.kind,
                name=name,
                version=version,
                problem=f"no READY version of {reference.kind} {which} when the study was dispatched "
                "(retired, or never completed)",
            )
            continue
        pins[reference.parameter] = ReferencePin(
            kind=reference.kind, name=name, owner=record.owner, version=int(record.version)
        )
    return pins


def _unavailable(pin: ReferencePin, why: str) -> ReferenceUnavailable:
    return ReferenceUnavailable(f"{pin.kind} {pin.name} version {pin.version}: {why}")


def load_reference(pin: ReferencePin, storage: ObjectStorage) -> Any:
    """A pinned version's files, checked against its manifest and turned into what the analysis
    gets (an Atlas, a NormsTable); ReferenceUnavailable when it cannot be."""
    if pin.problem is not None or pin.owner is None or pin.version is None:
        raise ReferenceUnavailable(pin.problem or f"{pin.kind} {pin.name}: no version was fixed")
    kind = ReferenceKind(pin.kind)
    key = reference_key(kind, pin.owner, pin.name, str(pin.version), MANIFEST_FILE)
    try:
        manifest = ReferenceManifest.model_validate_json(storage.read(key))
    except (ClientError, KeyError) as error:
        raise _unavailable(pin, "no longer stored (retired after the study was dispatched?)") from error
    except ValidationError as error:
        raise _unavailable(pin, f"its manifest is not readable ({error.error_count()} errors)") from error
    contents: dict[str, bytes] = {}
    for role, entry in manifest.files.items():
        try:
            data = storage.read(entry.key)
        except (ClientError, KeyError) as error:
            raise _unavailable(pin, f"its {role} file is no longer stored") from error
        if hashlib.sha256(data).hexdigest() != entry.sha256:
            raise _unavailable(pin, f"its {role} file is not the one verified (sha256 differs)")
        contents[role] = data
    provenance = {
        "kind": kind.value,
        "name": manifest.name,
        "version": manifest.version,
        "scope": scope_of(manifest.owner).value,
        **manifest.metadata.model_dump(mode="json", exclude_none=True),
    }
    return materialise(
        kind,
        contents,
        name=manifest.name,
        version=manifest.version,
        metadata=manifest.metadata,
        provenance=provenance,
    )


def load_references(pins: Mapping[str, ReferencePin], storage: ObjectStorage) -> dict[str, Any]:
    """`load_reference` for each pin, by parameter: AnalysisInput.references."""
    return {parameter: load_reference(pin, storage) for parameter, pin in pins.items()}
