"""Deployment settings read from CDK context (cdk.json, `-c key=value`, or a pipeline stage).

Every key is documented in docs/deploy.md; the defaults here are the ones cdk.json repeats.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from voxelpipe.quotas import default_limits
from voxelpipe.wiring import DEFAULT_BATCH_MAX_IN_FLIGHT

if TYPE_CHECKING:  # imported without CDK by `voxelpipe serve` (the CORS origins)
    from constructs import Node

# Days CloudWatch log groups (functions, API access and execution logs, state machine) keep events.
LOG_RETENTION_DAYS = "voxelpipe:logRetentionDays"
# Days after which derived/ objects move to S3 Glacier Instant Retrieval (reads stay immediate).
DERIVED_TRANSITION_DAYS = "voxelpipe:derivedTransitionDays"
# Origins (a list, or a comma-separated string) a browser front end may call the REST API from
# (CORS); none by default: no browser origin is allowed.
CORS_ALLOWED_ORIGINS = "voxelpipe:corsAllowedOrigins"
# How many studies of one bulk reprocess batch may be in flight at once (docs/api.md, batches).
REPROCESS_MAX_IN_FLIGHT = "voxelpipe:reprocessMaxInFlight"
# Days a machine client lives (its secret then stops working): the default and the most an admin
# may ask for (docs/security.md, "Machine clients and CLI login").
MACHINE_CLIENT_DAYS = "voxelpipe:machineClientDays"
# Days the access audit keeps its rows (DynamoDB's TTL removes older ones); null (the default):
# kept for ever. HIPAA keeps the documentation it requires 6 years (45 CFR 164.316(b)(2)): set at
# least 2190 if at all.
AUDIT_RETENTION_DAYS = "voxelpipe:audit:retention_days"
# Per-tenant quota defaults, an object of voxelpipe.quotas.Quota names to limits (each tenant may be
# given others through PUT /quotas/{tenant}); absent names keep voxelpipe.quotas.DEFAULT_LIMITS.
QUOTAS = "voxelpipe:quotas"
# The shortest retention accepted: the audit must outlive the 6 years HIPAA keeps documentation.
MIN_AUDIT_RETENTION_DAYS = 6 * 365
# The GPU workers' settings are `voxelpipe:gpu:*` keys, read by voxelpipe.gpu_settings.GpuSettings.

DEFAULTS: dict[str, Any] = {
    LOG_RETENTION_DAYS: 365,
    DERIVED_TRANSITION_DAYS: 90,
    CORS_ALLOWED_ORIGINS: [],
    REPROCESS_MAX_IN_FLIGHT: DEFAULT_BATCH_MAX_IN_FLIGHT,
    MACHINE_CLIENT_DAYS: 90,
    AUDIT_RETENTION_DAYS: None,
    QUOTAS: {},
}


def cdk_json_cors_origins() -> tuple[str, ...]:
    """The CORS origins cdk.json's context sets (`voxelpipe serve` applies them too)."""
    context = json.loads((Path(__file__).resolve().parent.parent / "cdk.json").read_text()).get("context", {})
    return parse_origins(context.get(CORS_ALLOWED_ORIGINS) or [])


def parse_origins(value: Any) -> tuple[str, ...]:
    """Origins from a list or a comma-separated string; each must be scheme://host[:port]."""
    items = value.split(",") if isinstance(value, str) else list(value or [])
    origins = tuple(str(item).strip().rstrip("/") for item in items if str(item).strip())
    for origin in origins:
        scheme, _, rest = origin.partition("://")
        if scheme not in ("https", "http") or not rest or "/" in rest or origin == "*":
            raise ValueError(f"{origin!r} is not an origin (https://host[:port]); '*' is not allowed")
    return origins


@dataclass(frozen=True)
class StackSettings:
    """What shapes one deployment of VoxelpipeStack (dev and prod differ only in these)."""

    log_retention_days: int
    derived_transition_days: int
    cors_allowed_origins: tuple[str, ...] = ()
    reprocess_max_in_flight: int = DEFAULT_BATCH_MAX_IN_FLIGHT
    machine_client_days: int = 90
    audit_retention_days: int | None = None
    quota_defaults: dict[str, int] | None = None

    @classmethod
    def from_context(cls, node: Node) -> StackSettings:
        def value(key: str) -> Any:
            found = node.try_get_context(key)
            return DEFAULTS[key] if found is None else found

        settings = cls(
            log_retention_days=int(value(LOG_RETENTION_DAYS)),
            derived_transition_days=int(value(DERIVED_TRANSITION_DAYS)),
            cors_allowed_origins=parse_origins(value(CORS_ALLOWED_ORIGINS)),
            reprocess_max_in_flight=int(value(REPROCESS_MAX_IN_FLIGHT)),
            machine_client_days=int(value(MACHINE_CLIENT_DAYS)),
            audit_retention_days=None
            if value(AUDIT_RETENTION_DAYS) is None
            else int(value(AUDIT_RETENTION_DAYS)),
            quota_defaults={
                quota.value: limit for quota, limit in default_limits(json.dumps(value(QUOTAS))).items()
            },
        )
        if not 1 <= settings.machine_client_days <= 365:
            raise ValueError(
                f"{MACHINE_CLIENT_DAYS} must be 1 to 365 days, not {settings.machine_client_days}"
            )
        if (
            settings.audit_retention_days is not None
            and settings.audit_retention_days < MIN_AUDIT_RETENTION_DAYS
        ):
            raise ValueError(
                f"{AUDIT_RETENTION_DAYS} is {settings.audit_retention_days}: keep the access audit at least "
                f"{MIN_AUDIT_RETENTION_DAYS} days (HIPAA's 6 years), or leave it unset (kept for ever)"
            )
        if (
            min(
                settings.derived_transition_days,
                settings.log_retention_days,
                settings.reprocess_max_in_flight,
            )
            < 1
        ):
            raise ValueError(f"invalid deployment settings: {settings}")
        return settings
