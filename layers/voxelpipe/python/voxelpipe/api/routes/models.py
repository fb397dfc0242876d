"""Registered models (bring your own model): register, complete, list, retire."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from voxelpipe.adapters.storage import Storage
from voxelpipe.api.auth import Action
from voxelpipe.api.dependencies import Caller
from voxelpipe.api.problems import Problem
from voxelpipe.api.schemas import CompleteModel, CreateModel, ModelCreated, ModelPage, ModelView
from voxelpipe.api.uploads import expiry, post_target
from voxelpipe.api.views import model_view
from voxelpipe.inference import registry

router = APIRouter(prefix="/models", tags=["models"])


def _not_found(error: registry.ModelNotFound) -> Problem:
    return Problem(404, "model_not_found", "No such model", str(error))


@router.post("", status_code=201, response_model=ModelCreated)
def register_model(body: CreateModel, caller: Caller) -> ModelCreated:
    caller.require(Action.MANAGE_MODELS)
    record = registry.register_model(body.name, body.spec, body.size, body.sha256, actor=caller.subject)
    # Always one form POST: a model is at most 5 GB (MAX_MODEL_BYTES), S3's limit for one.
    filename = record.object_key.rsplit("/", 1)[-1]
    upload = post_target(Storage.from_environment(), record.object_key, filename, body.size, expiry())
    return ModelCreated(model=model_view(record), upload=upload)


@router.post("/{name}/complete", response_model=ModelView)
def complete_model(name: str, caller: Caller, body: CompleteModel | None = None) -> ModelView:
    caller.require(Action.MANAGE_MODELS)
    version = body.version if body is not None else None
    try:
        record = registry.complete_model(name, Storage.from_environment(), version)
    except registry.ModelNotFound as error:
        raise _not_found(error) from error
    except registry.ModelUploadMismatch as error:
        raise Problem(
            409, "model_upload_mismatch", "The model file is not as declared", str(error)
        ) from error
    except registry.ModelRetired as error:
        raise Problem(409, "model_retired", "The model version was retired", str(error)) from error
    return model_view(record)


@router.delete("/{name}", response_model=ModelPage)
def retire_model(name: str, caller: Caller, version: Annotated[int | None, Query(ge=1)] = None) -> ModelPage:
    caller.require(Action.MANAGE_MODELS)
    try:
        records = registry.retire_model(name, Storage.from_environment(), version, actor=caller.subject)
    except registry.ModelNotFound as error:
        raise _not_found(error) from error
    return ModelPage(items=[model_view(record) for record in records])


@router.get("", response_model=ModelPage)
def list_models(caller: Caller) -> ModelPage:
    caller.require(Action.READ)
    return ModelPage(items=[model_view(record) for record in registry.list_models()])
