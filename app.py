#!/usr/bin/env python3
"""CDK entry point: `cdk synth` / `cdk deploy` (after `make layers`), or `python app.py`."""

import sys

from infra.synth import DEPENDENCY_LAYER_DIR, build_app

if not (DEPENDENCY_LAYER_DIR / "python").is_dir():
    sys.exit(
        f"{DEPENDENCY_LAYER_DIR} is missing: run `make layers` first (it builds the Lambda dependency layer)"
    )

app, _ = build_app(dependency_layer_dir=DEPENDENCY_LAYER_DIR)
app.synth()
