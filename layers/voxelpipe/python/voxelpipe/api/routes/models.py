"""Registered models (bring your own model): register, complete, list, retire.

A tenant's admins register, complete and retire the tenant's own models; operators also publish
deployment-wide ones (`scope: deployment`), which every tenant sees and runs but cannot change.
Another tenant's model is a 404, as one that does not exist.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from voxelpipe.adapters.storage import Storage
from voxelpipe.api.auth import Action, Principal
from voxelpipe.api.dependencies import Caller, requires
from voxelpipe.api.problems import Problem
from voxelpipe.api.schemas import CompleteModel, CreateModel, ModelCreated, ModelPage, ModelView
from voxelpipe.api.uploads import expiry, post_target
from voxelpipe.api.views import model_view
from voxelpipe.inference import registry
from voxelpipe.inference.registry import ModelScope
from voxelpipe.keys import DEPLOYMENT_OWNER

router = APIRouter(prefix="/models", tags=["models"])


def _not_found(error: registry.ModelNotFound) -> Problem:
    return Problem(404, "model_not_found", "No such model", str(error))


def _owner(caller: Principal, scope: ModelScope, name: str | None = None) -> str:
    """Whose model the caller changes: its tenant's, or (operators, scope deployment) the
    deployment's. A tenant's admin naming a deployment-wide model it does not own is refused."""
    if scope == ModelScope.DEPLOYMENT:
        caller.require(Action.PUBLISH_MODELS)
        return DEPLOYMENT_OWNER
    if (
        name is not None
        and not registry.has_model(caller.tenant, name)
        and registry.has_model(DEPLOYMENT_OWNER, name)
    ):
        raise Problem(
            403,
            "forbidden",
            "Not allowed",
            f"model {name} is deployment-wide: tenants use it, only an operator changes it "
            "(with scope deployment)",
        )
    return caller.tenant


@router.post(
    "", status_code=201, response_model=ModelCreated, **requires(Action.MANAGE_MODELS, audit="model.register")
)
def register_model(body: CreateModel, caller: Caller) -> ModelCreated:
    owner = _owner(caller, body.scope)
    record = registry.register_model(
        owner, body.name, body.spec, body.size, body.sha256, actor=caller.subject
    )
    # Always one form POST: a model is at most 5 GB (MAX_MODEL_BYTES), S3's limit for one.
    filename = record.object_key.rsplit("/", 1)[-1]
    upload = post_target(Storage.from_environment(), record.object_key, filename, body.size, expiry())
    return ModelCreated(model=model_view(record), upload=upload)


@router.post(
    "/{name}/complete",
    response_model=ModelView,
    **requires(Action.MANAGE_MODELS, 404, 409, audit="model.complete"),
)
def complete_model(name: str, caller: Caller, body: CompleteModel | None = None) -> ModelView:
    body = body or CompleteModel()
    owner = _owner(caller, body.scope, name)
    try:
        record = registry.complete_model(owner, name, Storage.from_environment(), body.version)
    except registry.ModelNotFound as error:
        raise _not_found(error) from error
    except registry.ModelUploadMismatch as error:
        raise Problem(
            409, "model_upload_mismatch", "The model file is not as declared", str(error)
        ) from error
    except registry.ModelRetired as error:
        raise Problem(409, "model_retired", "The model version was retired", str(error)) from error
    except registry.ModelTooLargeForLambda as error:
        raise Problem(
            409, "model_too_large_for_lambda", "The model is too large for its runtime", str(error)
        ) from error
    return model_view(record)


@router.delete(
    "/{name}", response_model=ModelPage, **requires(Action.MANAGE_MODELS, 404, audit="model.retire")
)
def retire_model(
    name: str,
    caller: Caller,
    version: Annotated[int | None, Query(ge=1)] = None,
    scope: Annotated[
        ModelScope, Query(description="deployment: a deployment-wide model (operator only)")
    ] = ModelScope.TENANT,
) -> ModelPage:
    owner = _owner(caller, scope, name)
    try:
        records = registry.retire_model(
            owner, name, Storage.from_environment(), version, actor=caller.subject
        )
    except registry.ModelNotFound as error:
        raise _not_found(error) from error
    return ModelPage(items=[model_view(record) for record in records])


@router.get("", response_model=ModelPage, **requires(Action.READ, audit="model.list"))
def list_models(caller: Caller) -> ModelPage:
    """The caller's tenant's models and the deployment-wide ones, every version."""
    return ModelPage(items=[model_view(record) for record in registry.list_models(caller.tenant)])
