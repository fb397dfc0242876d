#!/usr/bin/env python3
"""CDK entry point: `cdk synth` / `cdk deploy` (after `make layers`), or `python app.py`."""

import os
import sys

from infra.layers import LAYERS_DIR, stale_layers
from infra.synth import build_app

problem = stale_layers(LAYERS_DIR)
if problem is not None:
    sys.exit(f"{problem} (it builds the Lambda layers for python3.12)")

# The cdk CLI says where to write (CDK_OUTDIR); run directly, write to cdk.out/ as it would.
app, _ = build_app(layers_dir=LAYERS_DIR, outdir=os.environ.get("CDK_OUTDIR", "cdk.out"))
app.synth()
print(f"synthesized into {app.outdir}/", file=sys.stderr)
