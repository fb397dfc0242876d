"""Building the CDK app: used by app.py (`cdk synth`/`deploy`) and by the local cloud."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from aws_cdk import App, Environment

from infra.layers import stand_in_layers
from infra.nag import add_nag_checks
from infra.pipeline import PIPELINE_CONTEXT, PIPELINE_STACK_NAME, STACK_NAME, PipelineConfig, PipelineStack
from infra.stack import ROOT, VoxelpipeStack

CDK_JSON = ROOT / "cdk.json"
# Feature flags the stack relies on (cdk.json repeats them for the cdk CLI).
FEATURE_FLAGS = {
    # Server access logs are delivered under a bucket policy, not the legacy LogDeliveryWrite ACL.
    "@aws-cdk/aws-s3:serverAccessLogsUseBucketPolicy": True,
}


def build_app(
    *,
    layers_dir: Path,
    outdir: str | None = None,
    env: Environment | None = None,
    context: dict[str, Any] | None = None,
) -> tuple[App, VoxelpipeStack]:
    """The app: the standalone stack, and the deploy pipeline when its context names a connection.

    Context: the flags above, then cdk.json's (so `python app.py` sees what `cdk synth` does), then
    `context`; the cdk CLI's own (`-c`, CDK_CONTEXT_JSON) overrides all of them.
    """
    app = App(outdir=outdir, context={**FEATURE_FLAGS, **cdk_json_context(), **(context or {})})
    # cdk-nag's packs check every synthesis: an unacknowledged finding fails app.synth().
    add_nag_checks(app)
    stack = VoxelpipeStack(app, STACK_NAME, layers_dir=layers_dir, env=env)
    pipeline = PipelineConfig.from_context(app.node.try_get_context(PIPELINE_CONTEXT))
    if pipeline is not None:
        PipelineStack(app, PIPELINE_STACK_NAME, config=pipeline, layers_dir=layers_dir)
    return app, stack


def cdk_json_context() -> dict[str, Any]:
    context: dict[str, Any] = json.loads(CDK_JSON.read_text()).get("context", {})
    return context


def synthesize_template(context: dict[str, Any] | None = None) -> dict[str, Any]:
    """The stack's CloudFormation template, as `cdk synth` writes it (with `context`, as
    `cdk synth -c KEY=VALUE ...` would: tests synthesize with short GPU heartbeats so).

    The layers' contents don't shape the template (only their asset hashes), so empty folders
    stand in for them: the local cloud runs on the development venv.
    """
    with tempfile.TemporaryDirectory(prefix="voxelpipe-synth-") as tmp:
        app, stack = build_app(
            layers_dir=stand_in_layers(Path(tmp) / "layers"),
            outdir=str(Path(tmp) / "cdk.out"),
            context=context,
        )
        assembly = app.synth()
        template = assembly.get_stack_by_name(stack.stack_name).template
        result: dict[str, Any] = json.loads(json.dumps(template))
        return result
