"""Building the CDK app: used by app.py (`cdk synth`/`deploy`) and by the local cloud."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from aws_cdk import App, Environment

from infra.stack import ROOT, VoxelpipeStack

STACK_NAME = "Voxelpipe"
# `make layers` installs the Lambda dependency layer here.
DEPENDENCY_LAYER_DIR = ROOT / "build" / "layers" / "deps"


def build_app(
    *,
    dependency_layer_dir: Path,
    outdir: str | None = None,
    env: Environment | None = None,
    context: dict[str, Any] | None = None,
) -> tuple[App, VoxelpipeStack]:
    app = App(outdir=outdir, context=context)
    stack = VoxelpipeStack(app, STACK_NAME, dependency_layer_dir=dependency_layer_dir, env=env)
    return app, stack


def synthesize_template(context: dict[str, Any] | None = None) -> dict[str, Any]:
    """The stack's CloudFormation template, as `cdk synth` writes it (with `context`, as
    `cdk synth -c KEY=VALUE ...` would: tests synthesize with short GPU heartbeats so).

    The dependency layer's contents don't shape the template (only its asset hash), so when it
    hasn't been built an empty folder stands in: the local cloud runs on the development venv.
    """
    with tempfile.TemporaryDirectory(prefix="voxelpipe-synth-") as tmp:
        layer_dir = DEPENDENCY_LAYER_DIR
        if not layer_dir.is_dir():
            layer_dir = Path(tmp) / "deps"
            (layer_dir / "python").mkdir(parents=True)
        app, stack = build_app(
            dependency_layer_dir=layer_dir, outdir=str(Path(tmp) / "cdk.out"), context=context
        )
        assembly = app.synth()
        template = assembly.get_stack_by_name(stack.stack_name).template
        result: dict[str, Any] = json.loads(json.dumps(template))
        return result
