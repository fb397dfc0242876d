"""Registering a study before its upload: what it asks for, checked against the catalogue."""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from typing import Any

from voxelpipe import tracking
from voxelpipe.analyses import DEFAULT_ANALYSES, resolve
from voxelpipe.inference.registry import model_analyses
from voxelpipe.keys import new_study_id
from voxelpipe.messages import Priority
from voxelpipe.records import StudyRecord


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
) -> StudyRecord:
    """A new study AWAITING_UPLOAD; an unknown analysis raises UnknownAnalysis before anything is stored.

    `model:NAME` is known when the model has a READY version (its version is chosen at dispatch).
    """
    requested = list(analyses) or list(DEFAULT_ANALYSES)
    names = [analysis.name for analysis in resolve(requested, models=model_analyses(requested))]
    unrequested = sorted(set(parameters or {}) - set(names))
    if unrequested:
        raise ValueError(f"parameters for analyses not requested: {', '.join(unrequested)}")
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
