"""Deployment settings read from CDK context (cdk.json, `-c key=value`, or a pipeline stage).

Every key is documented in docs/deploy.md; the defaults here are the ones cdk.json repeats.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from constructs import Node

# Days CloudWatch log groups (functions, API access and execution logs, state machine) keep events.
LOG_RETENTION_DAYS = "voxelpipe:logRetentionDays"
# Days after which derived/ objects move to S3 Glacier Instant Retrieval (reads stay immediate).
DERIVED_TRANSITION_DAYS = "voxelpipe:derivedTransitionDays"
# GPU workers (AWS Batch): instance types and the compute environment's vCPU ceiling.
GPU_INSTANCE_TYPES = "voxelpipe:gpuInstanceTypes"
GPU_MAX_VCPUS = "voxelpipe:gpuMaxVcpus"

DEFAULTS: dict[str, Any] = {
    LOG_RETENTION_DAYS: 365,
    DERIVED_TRANSITION_DAYS: 90,
    GPU_INSTANCE_TYPES: ["g5.xlarge"],
    GPU_MAX_VCPUS: 16,
}


@dataclass(frozen=True)
class StackSettings:
    """What shapes one deployment of VoxelpipeStack (dev and prod differ only in these)."""

    log_retention_days: int
    derived_transition_days: int
    gpu_instance_types: tuple[str, ...]
    gpu_max_vcpus: int

    @classmethod
    def from_context(cls, node: Node) -> StackSettings:
        def value(key: str) -> Any:
            found = node.try_get_context(key)
            return DEFAULTS[key] if found is None else found

        instance_types = value(GPU_INSTANCE_TYPES)
        if isinstance(instance_types, str):  # `-c voxelpipe:gpuInstanceTypes=g5.xlarge,g5.2xlarge`
            instance_types = [t.strip() for t in instance_types.split(",") if t.strip()]
        settings = cls(
            log_retention_days=int(value(LOG_RETENTION_DAYS)),
            derived_transition_days=int(value(DERIVED_TRANSITION_DAYS)),
            gpu_instance_types=tuple(instance_types),
            gpu_max_vcpus=int(value(GPU_MAX_VCPUS)),
        )
        if settings.derived_transition_days < 1 or settings.gpu_max_vcpus < 0 or not instance_types:
            raise ValueError(f"invalid deployment settings: {settings}")
        return settings
