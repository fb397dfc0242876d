"""Where things live in the ingest bucket."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass

from voxelpipe.wiring import Prefix

# A tenant names a folder of the bucket and comes from the caller's token (custom:tenant): the API
# refuses a token whose tenant does not match this (api.auth.Claims), and ingest an upload key.
TENANT_PATTERN = r"[a-z0-9][a-z0-9-]{0,62}"
_TENANT = re.compile(TENANT_PATTERN)
_STUDY_ID = re.compile(r"[a-z0-9][a-z0-9-]{7,63}")
# The owner of a deployment-wide model (published by an operator); never a tenant's name, since a
# tenant cannot begin with "_". Every other model is owned by the tenant that registered it.
DEPLOYMENT_OWNER = "_deployment"


def is_tenant(tenant: str) -> bool:
    """Whether `tenant` can be a tenant: lower-case letters, digits and '-', up to 63, not first '-'."""
    return _TENANT.fullmatch(tenant) is not None


def is_study_id(study_id: str) -> bool:
    return _STUDY_ID.fullmatch(study_id) is not None


def destinations_audit_key(tenant: str) -> str:
    """Where a tenant's destination changes are audited ('#' is in no study id)."""
    return f"destinations#{tenant}"


def clients_audit_key(tenant: str) -> str:
    """Where a tenant's machine client changes are audited ('#' is in no study id)."""
    return f"clients#{tenant}"


def rules_audit_key(tenant: str) -> str:
    """Where a tenant's rule set changes are audited: the audit table's key for them ('#' is never
    in a study id, so it is no study's trail)."""
    return f"rules#{tenant}"


class InvalidKey(ValueError):
    """An upload key outside `uploads/{tenant}/{study_id}/{file}`."""


@dataclass(frozen=True)
class UploadKey:
    tenant: str
    study_id: str
    filename: str

    @property
    def key(self) -> str:
        return upload_prefix(self.tenant, self.study_id) + self.filename


def new_study_id() -> str:
    return uuid.uuid4().hex


def parse_study_prefix(key: str) -> tuple[str, str] | None:
    """(tenant, study_id) of an upload key whose first parts are well formed, else None."""
    parts = key.split("/")
    if len(parts) < 4 or f"{parts[0]}/" != Prefix.UPLOADS:
        return None
    tenant, study_id = parts[1], parts[2]
    if not (is_tenant(tenant) and is_study_id(study_id)):
        return None
    return tenant, study_id


def parse_upload_key(key: str) -> UploadKey:
    """Split an upload key; the file name is everything after the study id.

    Whether that name is acceptable (no path tricks) is validation's call: check_upload_name.
    """
    prefix = parse_study_prefix(key)
    if prefix is None:
        raise InvalidKey(f"{key!r} is not uploads/{{tenant}}/{{study_id}}/{{file}}")
    return UploadKey(*prefix, key.split("/", 3)[3])


def quarantine_key(key: str) -> str:
    """Rejected uploads keep their path under quarantine/."""
    return Prefix.QUARANTINE + key.removeprefix(Prefix.UPLOADS)


def derived_key(study_id: str, *parts: str) -> str:
    return "/".join((Prefix.DERIVED + study_id, *parts))


def work_prefix(study_id: str) -> str:
    return f"{Prefix.WORK}{study_id}/"


def work_key(study_id: str, attempt: int, name: str) -> str:
    return f"{work_prefix(study_id)}{attempt}/{name}"


def upload_prefix(tenant: str, study_id: str) -> str:
    return f"{Prefix.UPLOADS}{tenant}/{study_id}/"


def results_key(study_id: str) -> str:
    return derived_key(study_id, "results.json")


def model_prefix(owner: str, name: str, version: str) -> str:
    """Where a registered model's version lives: its file and model.json (see inference.registry).

    `owner` is the tenant that registered it, or DEPLOYMENT_OWNER."""
    if not (owner == DEPLOYMENT_OWNER or is_tenant(owner)):
        raise InvalidKey(f"{owner!r} owns no model: a tenant or {DEPLOYMENT_OWNER}")
    return f"{Prefix.MODELS}{owner}/{name}/{version}/"


def model_key(owner: str, name: str, version: str, filename: str) -> str:
    return model_prefix(owner, name, version) + filename


def reference_prefix(kind: str, owner: str, name: str, version: str) -> str:
    """Where a version of registered reference data lives: its files and manifest.json (see
    voxelpipe.references). `owner` is the tenant that registered it, or DEPLOYMENT_OWNER."""
    if not (owner == DEPLOYMENT_OWNER or is_tenant(owner)):
        raise InvalidKey(f"{owner!r} owns no reference data: a tenant or {DEPLOYMENT_OWNER}")
    return f"{Prefix.REFERENCES}{kind}/{owner}/{name}/{version}/"


def reference_key(kind: str, owner: str, name: str, version: str, filename: str) -> str:
    return reference_prefix(kind, owner, name, version) + filename


def report_html_key(study_id: str) -> str:
    return derived_key(study_id, "report.html")


def report_pdf_key(study_id: str) -> str:
    return derived_key(study_id, "report.pdf")


def export_key(tenant: str, export_id: str, extension: str) -> str:
    """Where a cohort export too large for a response is written (it expires in a day)."""
    return f"{Prefix.EXPORTS}{tenant}/{export_id}.{extension}"
