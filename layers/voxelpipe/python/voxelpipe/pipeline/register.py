"""Registering a study before its upload: what it asks for, checked against the catalogue."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Sequence
from datetime import date
from typing import Any

from voxelpipe import tracking
from voxelpipe.analyses import DEFAULT_ANALYSES, UnknownAnalysis, resolve
from voxelpipe.analyses.catalogue import merged_parameters
from voxelpipe.inference.registry import model_analyses
from voxelpipe.keys import new_study_id
from voxelpipe.limits import Limits
from voxelpipe.messages import Priority
from voxelpipe.pipeline.receive import TransferSource
from voxelpipe.pipeline.subjects import refresh_subject, shifted_scan_date
from voxelpipe.ports import StudyStore
from voxelpipe.pseudonyms import Pseudonyms
from voxelpipe.records import StudyRecord
from voxelpipe.references import ReferenceRefused, check_references
from voxelpipe.rejections import Rejected
from voxelpipe.upload_files import check_upload_name
from voxelpipe.upload_files import manifest as declared_manifest


class RegistrationRefused(ValueError):
    """What the study asks for cannot be registered; `field` names the part of the request at fault."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def check_analyses_requested(
    tenant: str, analyses: Sequence[str], parameters: dict[str, dict[str, Any]] | None
) -> list[str]:
    """The analyses to run (requirements added), or RegistrationRefused naming the field at fault:
    an unknown analysis, parameters of analyses not requested or that those analyses do not have,
    reference data the tenant has no READY version of. Registration and reprocess both ask."""
    requested = list(analyses) or list(DEFAULT_ANALYSES)
    try:
        resolved = resolve(requested, models=model_analyses(requested, tenant))
    except UnknownAnalysis as error:
        raise RegistrationRefused("analyses", str(error)) from error
    names = [analysis.name for analysis in resolved]
    unrequested = sorted(set(parameters or {}) - set(names))
    if unrequested:
        raise RegistrationRefused(
            "parameters", f"parameters for analyses not requested: {', '.join(unrequested)}"
        )
    for analysis in resolved:
        given = (parameters or {}).get(analysis.name)
        if given and analysis.owner is None:  # a catalogue analysis: its parameters are known here
            try:
                merged_parameters(analysis.name, analysis.parameters, given)
            except ValueError as error:
                raise RegistrationRefused(f"parameters.{analysis.name}", str(error)) from error
    try:
        check_references(resolved, parameters or {}, tenant)
    except ReferenceRefused as refused:
        raise RegistrationRefused(refused.field, str(refused)) from refused
    return names


def register_study(
    store: StudyStore,
    tenant: str,
    *,
    actor: str,
    source: str,
    analyses: Sequence[str] = DEFAULT_ANALYSES,
    priority: Priority = Priority.NORMAL,
    subject: dict[str, Any] | None = None,
    files: Sequence[tuple[str, int]] | None = None,
    webhook_url: str | None = None,
    input_format: str = "nifti",
    parameters: dict[str, dict[str, Any]] | None = None,
    limits: Limits | None = None,
    destinations: Sequence[str] | None = None,
    scan_date: date | None = None,
    pseudonyms: Pseudonyms | None = None,
    admit: Callable[[], None] | None = None,
) -> StudyRecord:
    """A new study AWAITING_UPLOAD; RegistrationRefused before anything is stored when it declares a
    file name with path tricks or over the upload limit, asks for an unknown analysis, for parameters
    of analyses it does not request or that those analyses do not have, or names reference data (an
    atlas, a norms table) the tenant has no READY version of.

    `model:NAME` is known when the tenant's own model NAME, or a deployment-wide one, has a READY
    version (its version is chosen at dispatch); so is reference data a parameter names.

    `scan_date` (the real date of the scan) needs a subject: it is shifted by the subject's offset
    (`pseudonyms`) here, and only the shifted date is stored (docs/subjects.md).

    `admit` runs once the registration is valid, before anything is stored (the tenant's quotas:
    it raises to refuse).
    """
    limits = limits or Limits()
    subject_ref = (subject or {}).get("subject_ref")
    stored_scan_date: str | None = None
    if scan_date is not None:
        if not subject_ref:
            raise RegistrationRefused(
                "scan_date", "a scan_date needs a subject_ref: dates are kept per subject"
            )
        if pseudonyms is None:
            raise ValueError("shifting a scan date needs the deployment's pseudonyms")
        stored_scan_date = shifted_scan_date(pseudonyms, tenant, subject_ref, scan_date)
    for index, (name, size) in enumerate(files or []):
        try:
            check_upload_name(name)
        except Rejected as rejected:
            raise RegistrationRefused(f"files.{index}.name", rejected.detail) from rejected
        if size > limits.max_upload_bytes:
            raise RegistrationRefused(
                f"files.{index}.size", f"over the {limits.max_upload_bytes}-byte upload limit"
            )
    names = check_analyses_requested(tenant, analyses, parameters)
    if admit is not None:
        admit()
    study_id = new_study_id()
    study = tracking.create_study(
        store,
        study_id,
        tenant,
        analyses=names,
        priority=priority.value,
        subject=subject,
        # The uploader's names stay here; the objects are stored under the names the server chose.
        manifest=[dict(entry) for entry in declared_manifest(files)] if files is not None else None,
        webhook_url=webhook_url,
        input_format=input_format,
        # DICOM UIDs are replaced by keyed hashes; the key is the study's own, never shown.
        uid_key=secrets.token_hex(32) if input_format == "dicom" else None,
        source=TransferSource.UPLOAD.value,
        parameters=parameters or None,
        destinations=destinations,
        scan_date=stored_scan_date,
    )
    assert study is not None, "a fresh study id exists already"
    if subject_ref:
        refresh_subject(store, tenant, subject_ref, including=study)
    tracking.audit(store, study_id, "registered", actor=actor, source=source, detail={"analyses": names})
    return study
