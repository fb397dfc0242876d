"""Per-tenant quotas (docs/security.md, "Quotas"): a tenant's admins see their usage against their
limits (`GET /usage`); operators read and set any tenant's limits (`GET`/`PUT /quotas/{tenant}`).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Path
from pydantic import BaseModel, ConfigDict, Field

from voxelpipe.api.auth import Action
from voxelpipe.api.dependencies import Caller, Quotas, requires
from voxelpipe.keys import TENANT_PATTERN
from voxelpipe.ports import QuotaStore
from voxelpipe.quotas import MAX_LIMIT, Quota

router = APIRouter(tags=["quotas"])

Limit = Annotated[int | None, Field(ge=0, le=MAX_LIMIT)]
TenantPath = Annotated[str, Path(pattern=f"^{TENANT_PATTERN}$", description="the tenant")]


class QuotaLimits(BaseModel):
    """A tenant's overrides of the deployment's defaults; null (or absent): the default."""

    model_config = ConfigDict(extra="forbid")

    studies_per_day: Limit = None
    concurrent_studies: Limit = None
    stored_bytes: Limit = None
    requests_per_minute: Limit = None


class TenantQuotas(BaseModel):
    tenant: str
    limits: dict[str, int] = Field(description="every quota's limit in force")
    overrides: dict[str, int] = Field(description="the limits set for this tenant (the rest: defaults)")
    defaults: dict[str, int] = Field(description="the deployment's defaults (CDK context voxelpipe:quotas)")


class QuotaUsage(BaseModel):
    limit: int
    used: int
    resets_at: datetime | None = Field(description="when the count starts again; null: as usage falls")


class TenantUsage(BaseModel):
    tenant: str
    quotas: dict[str, QuotaUsage]


def _view(table: QuotaStore, tenant: str) -> TenantQuotas:
    overrides = table.overrides(tenant)
    return TenantQuotas(
        tenant=tenant,
        limits={quota.value: value for quota, value in table.limits(tenant, fresh=True).items()},
        overrides={quota.value: value for quota, value in overrides.items()},
        defaults={quota.value: value for quota, value in table.defaults.items()},
    )


@router.get("/usage", response_model=TenantUsage, **requires(Action.READ_AUDIT, audit="quotas.usage"))
def usage(caller: Caller, table: Quotas) -> TenantUsage:
    """The caller's tenant's usage of each quota, against its limit."""
    found = table.usage(caller.tenant, datetime.now(UTC))
    return TenantUsage(
        tenant=caller.tenant, quotas={name: QuotaUsage(**value) for name, value in found.items()}
    )


@router.get(
    "/quotas/{tenant}", response_model=TenantQuotas, **requires(Action.MANAGE_QUOTAS, audit="quotas.read")
)
def read_quotas(tenant: TenantPath, caller: Caller, table: Quotas) -> TenantQuotas:
    return _view(table, tenant)


@router.put(
    "/quotas/{tenant}", response_model=TenantQuotas, **requires(Action.MANAGE_QUOTAS, audit="quotas.change")
)
def set_quotas(tenant: TenantPath, body: QuotaLimits, caller: Caller, table: Quotas) -> TenantQuotas:
    """Replace the tenant's overrides: the limits given; the others (null or absent) the defaults."""
    overrides = {Quota(name): value for name, value in body.model_dump().items() if value is not None}
    table.set_overrides(tenant, overrides, caller.subject)
    return _view(table, tenant)
