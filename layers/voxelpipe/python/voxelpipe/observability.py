"""Powertools Logger, Tracer and Metrics shared by every function.

Logs go to stderr: Lambda sends both streams to CloudWatch, and locally stdout stays free for
the CLI's own output.
"""

from __future__ import annotations

import sys
import warnings

from aws_lambda_powertools import Logger, Metrics, Tracer

logger = Logger(stream=sys.stderr)
tracer = Tracer()
metrics = Metrics()

# Metrics with their own dimension are flushed one by one (voxelpipe.telemetry), so a handler's
# shared metric set is often empty at the end, which Powertools would warn of on every call.
warnings.filterwarnings("ignore", message="No application metrics to publish")
