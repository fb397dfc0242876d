"""The light Lambdas ship as zip code plus layers, whose dependency layer is pyproject's
`dependencies` only: no torch, MONAI or onnxruntime (those are in the `analysis` extra, for the
container images). Their handlers must import without them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from voxelpipe.function_specs import FUNCTIONS, OPTIONAL_FUNCTIONS
from voxelpipe.wiring import EnvVar

HEAVY = ("torch", "monai", "onnxruntime")
ROOT = Path(__file__).resolve().parents[2]


def test_every_zip_function_imports_without_the_analysis_extra():
    handlers = [
        f"functions.{spec.name}.handler" for spec in (*FUNCTIONS, *OPTIONAL_FUNCTIONS) if not spec.image
    ]
    assert "functions.api.handler" in handlers
    script = "import sys\n" + "".join(f"sys.modules[{name!r}] = None\n" for name in HEAVY)
    script += "".join(f"import {module}\n" for module in handlers)
    # What the handlers read at import: resource names (any value serves), a region for boto3.
    env = {**os.environ, **{var.value: "1" for var in EnvVar}, "AWS_DEFAULT_REGION": "us-east-1"}
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
