"""Registering a study before its upload: what it asks for, checked against the catalogue."""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from typing import Any

from voxelpipe import tracking
from voxelpipe.analyses import DEFAULT_ANALYSES, UnknownAnalysis, resolve
from voxelpipe.inference.registry import model_analyses
from voxelpipe.keys import new_study_id
from voxelpipe.limits import Limits
from voxelpipe.messages import Priority
from voxelpipe.records import StudyRecord


class RegistrationRefused(ValueError):
    """What the study asks for cannot be registered; `field` names the part of the request at fault."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def register_study(
    tenant: str,
    *,
    actor: str,
    source: str,
    analyses: Sequence[str] = DEFAULT_ANALYSES,
    priority: Priority = Priority.NORMAL,
    subject: dict[str, Any] | None = None,
    manifest: Sequence[dict[str, Any]] | None = None,
    webhook_url: str | None = None,
    input_format: str = "nifti",
    parameters: dict[str, dict[str, Any]] | None = None,
    limits: Limits | None = None,
) -> StudyRecord:
    """A new study AWAITING_UPLOAD; RegistrationRefused before anything is stored when it asks for an
    unknown analysis, parameters of analyses it does not request, or a file over the upload limit.

    `model:NAME` is known when the tenant's own model NAME, or a deployment-wide one, has a READY
    version (its version is chosen at dispatch).
    """
    limits = limits or Limits()
    for index, declared in enumerate(manifest or []):
        if int(declared["size"]) > limits.max_upload_bytes:
            raise RegistrationRefused(
                f"files.{index}.size", f"over the {limits.max_upload_bytes}-byte upload limit"
            )
    requested = list(analyses) or list(DEFAULT_ANALYSES)
    try:
        names = [analysis.name for analysis in resolve(requested, models=model_analyses(requested, tenant))]
    except UnknownAnalysis as error:
        raise RegistrationRefused("analyses", str(error)) from error
    unrequested = sorted(set(parameters or {}) - set(names))
    if unrequested:
        raise RegistrationRefused(
            "parameters", f"parameters for analyses not requested: {', '.join(unrequested)}"
        )
    study_id = new_study_id()
    study = tracking.create_study(
        study_id,
        tenant,
        analyses=names,
        priority=priority.value,
        subject=subject,
        manifest=list(manifest) if manifest is not None else None,
        webhook_url=webhook_url,
        input_format=input_format,
        # DICOM UIDs are replaced by keyed hashes; the key is the study's own, never shown.
        uid_key=secrets.token_hex(32) if input_format == "dicom" else None,
        parameters=parameters or None,
    )
    assert study is not None, "a fresh study id exists already"
    tracking.audit(study_id, "registered", actor=actor, source=source, detail={"analyses": names})
    return study
