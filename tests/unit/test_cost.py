"""The cost model: measured GB-seconds and GPU seconds, estimated requests, one price table."""

from __future__ import annotations

import json

import pytest

from voxelpipe.cost import PRICES_AS_OF, PriceTable, StepUse, study_cost
from voxelpipe.function_specs import FINALIZE, INGEST, PREPARE, RUN_ANALYSIS
from voxelpipe.wiring import EnvVar, Runtime

STEPS = [
    StepUse("validate", 2000),
    StepUse("prepare", 10_000),
    StepUse("analysis:qc", 4000),
    StepUse("analysis:model:unet", 3000),
    StepUse("finalize", 500),
]
RUNTIMES = {"qc": Runtime.LAMBDA, "model:unet": Runtime.GPU}


def test_gb_seconds_are_duration_times_each_functions_memory_and_gpu_analyses_count_as_gpu_seconds():
    cost = study_cost(STEPS, RUNTIMES, stages=2, s3_gets=4, s3_puts=9, prices=PriceTable())
    by_step = cost["lambda_gb_seconds_by_step"]
    assert by_step == {
        "validate": pytest.approx(2 * INGEST.memory_mb / 1024, abs=1e-3),
        "prepare": pytest.approx(10 * PREPARE.memory_mb / 1024, abs=1e-3),
        "analysis:qc": pytest.approx(4 * RUN_ANALYSIS.memory_mb / 1024, abs=1e-3),
        "finalize": pytest.approx(0.5 * FINALIZE.memory_mb / 1024, abs=1e-3),
    }
    assert cost["gpu_seconds"] == 3.0
    assert cost["lambda_gb_seconds"] == pytest.approx(sum(by_step.values()), abs=1e-3)
    # Requests: 4 Lambda steps + dispatch; Prepare, RunAnalyses, 2 stages, 2 per analysis, Finalize, Done.
    assert cost["requests"] == {
        "lambda_invocations": 5,
        "state_transitions": 1 + 1 + 2 + 4 + 2,
        "s3_gets": 4,
        "s3_puts": 9,
        "events": 5,
    }
    assert cost["prices"] == {"region": "us-east-1", "as_of": PRICES_AS_OF}


def test_the_estimate_is_the_sum_of_use_times_prices():
    free = PriceTable(
        lambda_gb_second=0, lambda_request=0, state_transition=0, s3_put=0, s3_get=0, sqs_request=0, event=0
    )
    only_gpu = study_cost(STEPS, RUNTIMES, stages=2, s3_gets=4, s3_puts=9, prices=free)
    assert only_gpu["estimated_usd"] == pytest.approx(3.0 * free.gpu_second, rel=1e-3)
    full = study_cost(STEPS, RUNTIMES, stages=2, s3_gets=4, s3_puts=9, prices=PriceTable())
    assert full["estimated_usd"] > only_gpu["estimated_usd"]


def test_prices_are_overridable_from_the_environment(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv(EnvVar.PRICES, json.dumps({"gpu_second": 0.001, "as_of": "2027-01-01"}))
    prices = PriceTable.from_environment()
    assert prices.gpu_second == 0.001 and prices.as_of == "2027-01-01"
    assert prices.lambda_gb_second == PriceTable().lambda_gb_second
    monkeypatch.setenv(EnvVar.PRICES, json.dumps({"gpu_hour": 3}))
    with pytest.raises(ValueError, match="gpu_hour"):
        PriceTable.from_environment()
