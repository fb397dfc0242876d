"""Metrics are EMF blobs on stdout, one per dimensioned metric (Powertools' test pattern: capsys)."""

from __future__ import annotations

import json

import pytest
from aws_lambda_powertools.metrics import MetricUnit

from voxelpipe import telemetry
from voxelpipe.telemetry import NAMESPACE, Dimension, Metric


@pytest.fixture
def emf(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "false")
    monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", "voxelpipe")

    def blobs() -> list[dict]:
        return [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]

    return blobs


def test_a_dimensioned_metric_is_one_emf_blob(emf):
    telemetry.count(Metric.REJECTIONS, Dimension.REASON, "not_nifti")
    telemetry.emit(Metric.STEP_DURATION, 1234.5, MetricUnit.Milliseconds, Dimension.STEP, "prepare")
    rejection, duration = emf()
    (directive,) = rejection["_aws"]["CloudWatchMetrics"]
    assert directive["Namespace"] == NAMESPACE
    assert directive["Metrics"] == [{"Name": "Rejections", "Unit": "Count"}]
    assert sorted(directive["Dimensions"][0]) == ["reason", "service"]
    assert rejection["reason"] == "not_nifti" and rejection["Rejections"] in (1.0, [1.0])
    assert duration["step"] == "prepare" and duration["StepDuration"] in (1234.5, [1234.5])
    assert duration["_aws"]["CloudWatchMetrics"][0]["Metrics"][0]["Unit"] == "Milliseconds"


def test_nothing_is_printed_when_metrics_are_disabled(emf, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "true")  # as the local cloud sets it
    telemetry.count(Metric.FAILURES, Dimension.ERROR_TYPE, "ValueError")
    assert emf() == []
