"""The pipeline's CloudWatch metrics (EMF, through Powertools): every name and dimension, in one place.

Metrics with a dimension of their own (a status, a step, a reason, a queue, an error type) are
emitted as single metrics, each its own EMF blob: Powertools' shared `metrics` object puts one
dimension set on everything it flushes. The dashboard and the alarms (infra/monitoring.py) read
these same names.
"""

from __future__ import annotations

from enum import StrEnum

from aws_lambda_powertools.metrics import MetricUnit, single_metric
from aws_lambda_powertools.metrics.functions import is_metrics_disabled

from voxelpipe.observability import metrics

NAMESPACE = "Voxelpipe"  # POWERTOOLS_METRICS_NAMESPACE of every function (infra/stack.py)


class Metric(StrEnum):
    STUDY_TRANSITIONS = "StudyTransitions"  # count, dimension status: one per status change
    STEP_DURATION = "StepDuration"  # milliseconds, dimension step: each task row that ends
    REJECTIONS = "Rejections"  # count, dimension reason: the reason code of a REJECTED study
    FAILURES = "Failures"  # count, dimension error_type: the error of a FAILED study
    QUEUE_AGE = "QueueAge"  # seconds, dimension queue: a work item's wait before dispatch took it
    WEBHOOK_DELIVERIES = "WebhookDeliveries"  # count, dimension outcome: delivered|retry|skipped
    REAPED = "Reaped"  # count, dimension action: what the reaper did to a stuck study
    EVENTS_NOT_PUBLISHED = "EventsNotPublished"  # count: a status change the bus refused
    GPU_WORKERS = "GpuWorkers"  # count, dimension state: workers active, and submitted, at each scaling


class Dimension(StrEnum):
    STATUS = "status"
    STEP = "step"
    REASON = "reason"
    ERROR_TYPE = "error_type"
    QUEUE = "queue"
    OUTCOME = "outcome"
    ACTION = "action"
    STATE = "state"


def emit(metric: Metric, value: float, unit: MetricUnit, dimension: Dimension, dimension_value: str) -> None:
    """One metric with one dimension (and the service's default dimensions).

    `single_metric` prints even when metrics are disabled; the local cloud disables them to keep
    stdout for the CLI, so the switch is honoured here.
    """
    if is_metrics_disabled():
        return
    with single_metric(
        name=metric.value,
        unit=unit,
        value=value,
        namespace=metrics.namespace or NAMESPACE,
        default_dimensions={"service": metrics.service or "voxelpipe", **metrics.default_dimensions},
    ) as single:
        single.add_dimension(name=dimension.value, value=dimension_value or "unknown")


def count(metric: Metric, dimension: Dimension, dimension_value: str) -> None:
    emit(metric, 1, MetricUnit.Count, dimension, dimension_value)
