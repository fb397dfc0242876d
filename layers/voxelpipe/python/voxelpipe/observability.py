"""Powertools Logger, Tracer and Metrics shared by every function.

Logs go to stderr: Lambda sends both streams to CloudWatch, and locally stdout stays free for
the CLI's own output.
"""

from __future__ import annotations

import sys

from aws_lambda_powertools import Logger, Metrics, Tracer

logger = Logger(stream=sys.stderr)
tracer = Tracer()
metrics = Metrics()
