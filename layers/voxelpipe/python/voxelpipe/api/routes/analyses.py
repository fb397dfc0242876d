"""What a study may ask for: the catalogue's analyses and the registered models."""

from __future__ import annotations

import os
from typing import Any

from fastapi import APIRouter

from voxelpipe.analyses import CATALOGUE
from voxelpipe.api.auth import Action
from voxelpipe.api.dependencies import Caller, requires
from voxelpipe.gpu_settings import GpuSettings
from voxelpipe.inference import registry

router = APIRouter(tags=["analyses"])


@router.get("/analyses", **requires(Action.READ, audit="analysis.list"))
def analyses(caller: Caller) -> dict[str, list[dict[str, Any]]]:
    on_gpu = GpuSettings.from_env(os.environ).gpu_analyses
    catalogue = [analysis.describe(on_gpu) for analysis in CATALOGUE.values()]
    # The caller's tenant's models and the deployment-wide ones (a tenant's own wins a shared name).
    models = [
        registry.describe_model_analysis(record, on_gpu)
        for record in registry.ready_models(caller.tenant).values()
    ]
    return {"items": catalogue + sorted(models, key=lambda item: item["name"])}
