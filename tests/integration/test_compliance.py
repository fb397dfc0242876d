"""Compliance gates: cdk-nag (AwsSolutions + HIPAA Security) during synthesis, and cfn-lint.

The nag packs are validation plugins on every app build_app makes, so any synthesis fails on an
unacknowledged finding; these tests show that this one passes with nothing left over, that the
gate does fail on a non-compliant resource, and that cfn-lint finds no errors in the templates.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from aws_cdk import App, Stack
from aws_cdk import aws_s3 as s3
from cfnlint.api import ManualArgs, lint

from infra import nag
from infra.settings import DERIVED_TRANSITION_DAYS
from infra.synth import build_app

# A context value other than the default, to show the derived/ transition follows it.
TRANSITION_DAYS = 45


@pytest.fixture(scope="module")
def synthesized(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], dict[str, Any]]:
    """(validation report, template) of one synthesis with the packs, and a context override."""
    tmp = tmp_path_factory.mktemp("compliance")
    (tmp / "deps" / "python").mkdir(parents=True)
    app, stack = build_app(
        dependency_layer_dir=tmp / "deps",
        outdir=str(tmp / "cdk.out"),
        context={DERIVED_TRANSITION_DAYS: TRANSITION_DAYS},
    )
    assembly = app.synth()  # raises on any unacknowledged finding
    report = json.loads((Path(assembly.directory) / "validation-report.json").read_text())
    template = json.loads(json.dumps(assembly.get_stack_by_name(stack.stack_name).template))
    return report, template


def test_both_packs_ran_and_left_no_unacknowledged_finding(
    synthesized: tuple[dict[str, Any], dict[str, Any]],
):
    report, _ = synthesized
    plugins = {r["pluginName"]: r for r in report["pluginReports"]}
    assert set(plugins) == {nag.AWS_SOLUTIONS, nag.HIPAA}
    for name, plugin in plugins.items():
        assert plugin["conclusion"] == "success", name
        assert plugin["violations"] == [], name  # warnings too


def test_context_sets_when_derived_data_moves_to_a_colder_class(
    synthesized: tuple[dict[str, Any], dict[str, Any]],
):
    _, template = synthesized
    rules = [
        rule
        for r in template["Resources"].values()
        if r["Type"] == "AWS::S3::Bucket"
        for rule in r["Properties"].get("LifecycleConfiguration", {}).get("Rules", [])
        if rule.get("Prefix") == "derived/"
    ]
    assert [rule["Transitions"] for rule in rules] == [
        [{"StorageClass": "GLACIER_IR", "TransitionInDays": TRANSITION_DAYS}]
    ]


def test_an_unacknowledged_finding_fails_the_synthesis(tmp_path: Path):
    app = App(outdir=str(tmp_path))
    nag.add_nag_checks(app)
    stack = Stack(app, "Throwaway")
    s3.Bucket(stack, "Plain")  # no access logs, no KMS, no TLS-only policy
    with pytest.raises(Exception, match="ValidationFailed"):
        app.synth()
    report = json.loads((tmp_path / "validation-report.json").read_text())
    found = {v["ruleName"] for r in report["pluginReports"] for v in r["violations"]}
    assert {"AwsSolutions-S1", "HIPAA.Security-S3DefaultEncryptionKMS"} <= found


def test_an_acknowledgment_silences_only_its_own_finding(tmp_path: Path):
    app = App(outdir=str(tmp_path))
    nag.add_nag_checks(app)
    stack = Stack(app, "Throwaway")
    bucket = s3.Bucket(stack, "Plain")
    nag.acknowledge(bucket, nag.Ack("AwsSolutions-S1", "a test of the mechanism"))
    with pytest.raises(Exception, match="ValidationFailed"):
        app.synth()
    report = json.loads((tmp_path / "validation-report.json").read_text())
    found = {v["ruleName"] for r in report["pluginReports"] for v in r["violations"]}
    assert "AwsSolutions-S1" not in found and "HIPAA.Security-S3DefaultEncryptionKMS" in found


def _acknowledgments() -> list[nag.Ack]:
    found: list[nag.Ack] = []
    for value in vars(nag).values():
        if isinstance(value, nag.Ack):
            found.append(value)
        elif isinstance(value, tuple) and value and all(isinstance(item, nag.Ack) for item in value):
            found.extend(value)
    return found


def test_every_acknowledgment_says_why():
    acks = _acknowledgments()
    assert len(acks) > 10
    for ack in acks:
        assert ack.rule.startswith(("AwsSolutions-", "HIPAA.Security-")), ack.rule
        assert len(ack.reason.split()) >= 8, ack.rule
        if ack.rule == "AwsSolutions-IAM4":
            assert ack.applies_to, "an IAM4 acknowledgment names the managed policy it accepts"


def _lint_errors(template: dict[str, Any]) -> list[str]:
    matches = lint(json.dumps(template), config=ManualArgs(regions=["us-east-1"]))
    return [f"{m.rule.id} {m.message}" for m in matches if m.rule.id.startswith("E")]


def test_cfn_lint_finds_no_errors_in_the_stack(synthesized: tuple[dict[str, Any], dict[str, Any]]):
    _, template = synthesized
    assert _lint_errors(template) == []


def test_cfn_lint_does_report_errors():
    broken = {
        "Resources": {"Queue": {"Type": "AWS::SQS::Queue", "Properties": {"VisibilityTimeout": "soon"}}}
    }
    assert _lint_errors(broken)
