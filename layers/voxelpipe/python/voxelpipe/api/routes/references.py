"""Registered reference data (atlases, norms tables): register, complete, list, retire.

As for models: a tenant's admins register, complete and retire the tenant's own atlases; operators
also publish deployment-wide reference data (`scope: deployment`), which every tenant sees and uses
but cannot change; norms tables are deployment-wide only. Another tenant's data is a 404.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from voxelpipe import references
from voxelpipe.adapters.storage import Storage
from voxelpipe.api.auth import Action, Principal
from voxelpipe.api.dependencies import Caller, requires
from voxelpipe.api.problems import Problem, invalid_request
from voxelpipe.api.schemas import (
    CompleteReference,
    CreateReference,
    ReferenceCreated,
    ReferencePage,
    ReferenceView,
)
from voxelpipe.api.uploads import expiry, post_target
from voxelpipe.api.views import reference_view
from voxelpipe.keys import DEPLOYMENT_OWNER
from voxelpipe.reference_kinds import KINDS, ReferenceInvalid, ReferenceKind, ReferenceMetadata
from voxelpipe.references import ReferenceScope

router = APIRouter(prefix="/references", tags=["references"])


def _not_found(error: references.ReferenceNotFound) -> Problem:
    return Problem(404, "reference_not_found", "No such reference data", str(error))


def _owner(caller: Principal, kind: ReferenceKind, scope: ReferenceScope, name: str | None = None) -> str:
    """Whose data the caller changes: its tenant's, or (operators, scope deployment) the
    deployment's. A kind tenants cannot own, or a deployment-wide name the tenant does not own, is
    refused to a tenant's admin."""
    if scope == ReferenceScope.DEPLOYMENT:
        caller.require(Action.PUBLISH_REFERENCES)
        return DEPLOYMENT_OWNER
    if not KINDS[kind].tenant_owned:
        raise Problem(
            403,
            "forbidden",
            "Not allowed",
            f"a {kind} table is deployment-wide data: an operator registers it (with scope deployment)",
        )
    if (
        name is not None
        and not references.has_reference(kind, caller.tenant, name)
        and references.has_reference(kind, DEPLOYMENT_OWNER, name)
    ):
        raise Problem(
            403,
            "forbidden",
            "Not allowed",
            f"{kind} {name} is deployment-wide: tenants use it, only an operator changes it "
            "(with scope deployment)",
        )
    return caller.tenant


@router.post(
    "/{kind}",
    status_code=201,
    response_model=ReferenceCreated,
    **requires(Action.MANAGE_REFERENCES, audit="reference.register"),
)
def register_reference(kind: ReferenceKind, body: CreateReference, caller: Caller) -> ReferenceCreated:
    owner = _owner(caller, kind, body.scope)
    roles = [declared.role for declared in body.files]
    if sorted(roles) != sorted(KINDS[kind].files):
        raise invalid_request(
            "files", f"a {kind} has the files {', '.join(sorted(KINDS[kind].files))}, each declared once"
        )
    metadata = ReferenceMetadata(**body.model_dump(include=set(ReferenceMetadata.model_fields)))
    try:
        record = references.register_reference(
            kind,
            owner,
            body.name,
            metadata,
            {declared.role: (declared.size, declared.sha256) for declared in body.files},
            actor=caller.subject,
        )
    except ValueError as error:  # ReferenceInvalid among them: a size over the kind's limit, no space
        raise invalid_request("body", str(error)) from error
    storage = Storage.from_environment()
    expires_at = expiry()
    uploads = {
        role: post_target(storage, entry.key, entry.key.rsplit("/", 1)[-1], entry.size, expires_at)
        for role, entry in references.record_files(record).items()
    }
    return ReferenceCreated(reference=reference_view(record), uploads=uploads)


@router.post(
    "/{kind}/{name}/complete",
    response_model=ReferenceView,
    **requires(Action.MANAGE_REFERENCES, 404, 409, audit="reference.complete"),
)
def complete_reference(
    kind: ReferenceKind, name: str, caller: Caller, body: CompleteReference | None = None
) -> ReferenceView:
    """Verify the uploaded files and make the version READY; a 409 says what is wrong with them
    (the version stays PENDING: upload corrected files and complete again)."""
    body = body or CompleteReference()
    owner = _owner(caller, kind, body.scope, name)
    try:
        record = references.complete_reference(kind, owner, name, Storage.from_environment(), body.version)
    except references.ReferenceNotFound as error:
        raise _not_found(error) from error
    except references.ReferenceUploadMismatch as error:
        raise Problem(409, "reference_upload_mismatch", "A file is not as declared", str(error)) from error
    except ReferenceInvalid as error:
        raise Problem(409, "reference_invalid", f"The {kind} cannot be used", str(error)) from error
    except references.ReferenceRetired as error:
        raise Problem(409, "reference_retired", "The version was retired", str(error)) from error
    return reference_view(record)


@router.delete(
    "/{kind}/{name}",
    response_model=ReferencePage,
    **requires(Action.MANAGE_REFERENCES, 404, audit="reference.retire"),
)
def retire_reference(
    kind: ReferenceKind,
    name: str,
    caller: Caller,
    version: Annotated[int | None, Query(ge=1)] = None,
    scope: Annotated[
        ReferenceScope, Query(description="deployment: deployment-wide data (operator only)")
    ] = ReferenceScope.TENANT,
) -> ReferencePage:
    owner = _owner(caller, kind, scope, name)
    try:
        records = references.retire_reference(
            kind, owner, name, Storage.from_environment(), version, actor=caller.subject
        )
    except references.ReferenceNotFound as error:
        raise _not_found(error) from error
    return ReferencePage(items=[reference_view(record) for record in records])


@router.get("", response_model=ReferencePage, **requires(Action.READ, audit="reference.list"))
def list_references(caller: Caller) -> ReferencePage:
    """The caller's tenant's reference data and the deployment-wide data, every kind and version."""
    return ReferencePage(items=[reference_view(r) for r in references.list_references(caller.tenant)])


@router.get("/{kind}", response_model=ReferencePage, **requires(Action.READ, audit="reference.list"))
def list_references_of_kind(kind: ReferenceKind, caller: Caller) -> ReferencePage:
    """The caller's tenant's and the deployment-wide reference data of one kind, every version."""
    return ReferencePage(items=[reference_view(r) for r in references.list_references(caller.tenant, kind)])
