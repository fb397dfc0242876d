#!/usr/bin/env python3
"""CDK entry point: `cdk synth` / `cdk deploy` (after `make layers`), or `python app.py`."""

import os
import sys

from infra.synth import DEPENDENCY_LAYER_DIR, build_app

if not (DEPENDENCY_LAYER_DIR / "python").is_dir():
    sys.exit(
        f"{DEPENDENCY_LAYER_DIR} is missing: run `make layers` first (it builds the Lambda dependency layer)"
    )

# The cdk CLI says where to write (CDK_OUTDIR); run directly, write to cdk.out/ as it would.
app, _ = build_app(dependency_layer_dir=DEPENDENCY_LAYER_DIR, outdir=os.environ.get("CDK_OUTDIR", "cdk.out"))
app.synth()
print(f"synthesized into {app.outdir}/", file=sys.stderr)
