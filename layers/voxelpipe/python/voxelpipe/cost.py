"""What a study attempt used, measured from its task rows, and what that costs at list prices.

Measured: each step's duration (task rows) times its function's memory (its FunctionSpec) is
Lambda GB-seconds; analyses whose runtime is `gpu` count as GPU seconds instead. Estimated:
requests (Lambda invocations, Step Functions state transitions, S3 requests, events), counted
from the shape of the study, not metered. Prices: one table, us-east-1 on-demand list prices
as of PRICES_AS_OF, overridable with VOXELPIPE_PRICES (JSON of PriceTable fields).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

from voxelpipe.function_specs import RUN_ANALYSIS, STEP_FUNCTIONS, FunctionSpec, analysis_of_step
from voxelpipe.wiring import EnvVar, Runtime

PRICES_AS_OF = "2026-11-01"


@dataclass(frozen=True)
class PriceTable:
    """USD, us-east-1 on-demand list prices (x86 Lambda; a g5.xlarge's one A10G for the GPU)."""

    region: str = "us-east-1"
    as_of: str = PRICES_AS_OF
    lambda_gb_second: float = 0.0000166667
    lambda_request: float = 0.20 / 1_000_000
    gpu_second: float = 1.006 / 3600  # g5.xlarge on-demand, per second, one GPU
    state_transition: float = 0.025 / 1000  # Step Functions Standard
    s3_put: float = 0.005 / 1000  # PUT, COPY, POST, LIST
    s3_get: float = 0.0004 / 1000
    sqs_request: float = 0.40 / 1_000_000
    event: float = 1.00 / 1_000_000  # EventBridge custom events

    @classmethod
    def from_environment(cls) -> PriceTable:
        """The defaults, with VOXELPIPE_PRICES' fields in their place (unknown fields refused)."""
        text = os.environ.get(EnvVar.PRICES)
        if not text:
            return cls()
        overrides = json.loads(text)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ValueError(f"{EnvVar.PRICES}: unknown price fields {', '.join(unknown)}")
        return replace(cls(), **overrides)


@dataclass(frozen=True)
class StepUse:
    """One step's measured duration: a task row."""

    step: str
    duration_ms: float


def _function_of(step: str) -> FunctionSpec | None:
    """The Lambda function that ran a step."""
    if step in STEP_FUNCTIONS:
        return STEP_FUNCTIONS[step]
    return RUN_ANALYSIS if analysis_of_step(step) is not None else None


def study_cost(
    steps: Iterable[StepUse],
    runtimes: Mapping[str, Runtime],
    *,
    stages: int,
    s3_gets: int,
    s3_puts: int,
    prices: PriceTable,
) -> dict[str, Any]:
    """The attempt's resource use and estimated cost (the `cost` of GET /studies/{id})."""
    gb_seconds: dict[str, float] = {}
    gpu_seconds = 0.0
    invocations = 1  # dispatch, which keeps no task row
    for use in steps:
        seconds = use.duration_ms / 1000
        analysis = analysis_of_step(use.step)
        if analysis is not None and runtimes.get(analysis) is Runtime.GPU:
            gpu_seconds += seconds
            continue
        spec = _function_of(use.step)
        if spec is None:
            continue
        invocations += 1
        gb_seconds[use.step] = gb_seconds.get(use.step, 0.0) + seconds * spec.memory_mb / 1024
    # Dispatch keeps no task row: only its request is counted. State transitions: Prepare, the
    # stages Map and per stage its Map, per analysis its Choice and task, Finalize and Done
    # (as infra/workflow.py draws them).
    analyses = len(runtimes)
    transitions = 1 + 1 + stages + 2 * analyses + 2
    # Events: one per status change of a completed attempt (VALIDATING..COMPLETED, 5).
    events = 5
    total_gb_s = sum(gb_seconds.values())
    usd = (
        total_gb_s * prices.lambda_gb_second
        + invocations * prices.lambda_request
        + gpu_seconds * prices.gpu_second
        + transitions * prices.state_transition
        + s3_gets * prices.s3_get
        + s3_puts * prices.s3_put
        + 2 * prices.sqs_request  # the work item: send, receive (the delete is free with it)
        + events * prices.event
    )
    return {
        "lambda_gb_seconds": round(total_gb_s, 3),
        "lambda_gb_seconds_by_step": {step: round(value, 3) for step, value in gb_seconds.items()},
        "gpu_seconds": round(gpu_seconds, 3),
        "requests": {
            "lambda_invocations": invocations,
            "state_transitions": transitions,
            "s3_gets": s3_gets,
            "s3_puts": s3_puts,
            "events": events,
        },
        "estimated_usd": round(usd, 6),
        "prices": {"region": prices.region, "as_of": prices.as_of},
    }
