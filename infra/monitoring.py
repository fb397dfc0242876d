"""The operators' view: one dashboard, and alarms wired to one SNS topic (docs/operations.md).

The stack hands each queue, dead-letter queue, function and state machine to a `monitor_*`
method, which adds its alarms and its dashboard widgets: a resource added later gets the same
alarms by the same call.
"""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as actions
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from aws_cdk import aws_sqs as sqs
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

from voxelpipe.status import StudyStatus
from voxelpipe.telemetry import NAMESPACE, Dimension, Metric
from voxelpipe.workflow_settings import QUEUE_MAX_RECEIVE_COUNT, QUEUE_VISIBILITY_TIMEOUT_S

PERIOD = Duration.minutes(5)
# A work item older than this has outlived its receives (it is on its way to the dead letters).
WORK_QUEUE_OLDEST_S = QUEUE_MAX_RECEIVE_COUNT * QUEUE_VISIBILITY_TIMEOUT_S
SERVICE = "voxelpipe"  # POWERTOOLS_SERVICE_NAME: every metric's service dimension
ALARM_EMAIL_CONTEXT = "alarm_email"  # `cdk deploy -c alarm_email=oncall@example.org`


class Monitoring(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        topic: sns.Topic,
        alarm_email: str | None = None,
    ) -> None:
        """`topic` receives every alarm: its key must let CloudWatch publish (StackSecurity.topic)."""
        super().__init__(scope, construct_id)
        self.topic = topic
        if alarm_email:
            self.topic.add_subscription(subscriptions.EmailSubscription(alarm_email))
        self.dashboard = cloudwatch.Dashboard(self, "Dashboard")
        self.dashboard.add_widgets(
            cloudwatch.TextWidget(
                markdown="# voxelpipe\nStudies, steps, queues, executions, functions.", width=24
            )
        )
        self._pipeline_widgets()

    # -- alarms ------------------------------------------------------------------------------
    def _alarm(
        self,
        construct_id: str,
        metric: cloudwatch.IMetric,
        *,
        threshold: float,
        description: str,
    ) -> None:
        alarm = cloudwatch.Alarm(
            self,
            construct_id,
            metric=metric,
            threshold=threshold,
            evaluation_periods=1,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
            alarm_description=description,
        )
        alarm.add_alarm_action(actions.SnsAction(self.topic))

    def monitor_dead_letters(self, name: str, dead_letters: sqs.IQueue) -> None:
        """Anything in a dead-letter queue is work that gave up: alarm on the first message."""
        depth = dead_letters.metric_approximate_number_of_messages_visible(period=PERIOD, statistic="Maximum")
        self._alarm(
            f"{name}Depth",
            depth,
            threshold=1,
            description=f"{name}: work that gave up is waiting here (docs/operations.md, Alarms)",
        )
        self.dashboard.add_widgets(
            cloudwatch.GraphWidget(title=f"{name} depth", left=[depth], width=6),
        )

    def monitor_queue(
        self,
        name: str,
        queue: sqs.IQueue,
        dead_letters: sqs.IQueue | None = None,
        *,
        oldest_s: int = WORK_QUEUE_OLDEST_S,
    ) -> None:
        """A queue whose oldest message is `oldest_s` old is not being drained; and its DLQ."""
        age = queue.metric_approximate_age_of_oldest_message(period=PERIOD, statistic="Maximum")
        depth = queue.metric_approximate_number_of_messages_visible(period=PERIOD, statistic="Maximum")
        self._alarm(
            f"{name}OldestMessage",
            age,
            threshold=oldest_s,
            description=f"{name}: the oldest message has waited {oldest_s} s or more",
        )
        self.dashboard.add_widgets(
            cloudwatch.GraphWidget(title=f"{name} depth", left=[depth], width=6),
            cloudwatch.GraphWidget(title=f"{name} oldest message (s)", left=[age], width=6),
        )
        if dead_letters is not None:
            self.monitor_dead_letters(f"{name}DeadLetters", dead_letters)

    def monitor_function(self, name: str, function: lambda_.IFunction) -> None:
        errors = function.metric_errors(period=PERIOD, statistic="Sum")
        throttles = function.metric_throttles(period=PERIOD, statistic="Sum")
        duration = function.metric_duration(period=PERIOD, statistic="p90")
        self._alarm(f"{name}Errors", errors, threshold=1, description=f"{name}: the function failed")
        self._alarm(f"{name}Throttles", throttles, threshold=1, description=f"{name}: invocations throttled")
        self.dashboard.add_widgets(
            cloudwatch.GraphWidget(
                title=f"{name}: errors, throttles", left=[errors, throttles], right=[duration], width=8
            )
        )

    def monitor_state_machine(self, name: str, machine: sfn.StateMachine) -> None:
        failed = machine.metric_failed(period=PERIOD, statistic="Sum")
        timed_out = machine.metric_timed_out(period=PERIOD, statistic="Sum")
        throttled = machine.metric_throttled(period=PERIOD, statistic="Sum")
        self._alarm(f"{name}Failed", failed, threshold=1, description=f"{name}: executions failed")
        self._alarm(f"{name}TimedOut", timed_out, threshold=1, description=f"{name}: executions timed out")
        self._alarm(f"{name}Throttled", throttled, threshold=1, description=f"{name}: executions throttled")
        self.dashboard.add_widgets(
            cloudwatch.GraphWidget(
                title="Executions",
                left=[
                    machine.metric_started(period=PERIOD, statistic="Sum"),
                    machine.metric_succeeded(period=PERIOD, statistic="Sum"),
                    failed,
                    timed_out,
                    throttled,
                ],
                width=12,
            )
        )

    # -- the pipeline's own metrics (voxelpipe.telemetry) ------------------------------------
    def _pipeline_widgets(self) -> None:
        def by(metric: Metric, dimension: Dimension, statistic: str, label: str) -> cloudwatch.MathExpression:
            # One line per dimension value, whichever values occur (steps and reasons are open sets).
            search = (
                f"SEARCH('{{{NAMESPACE},{dimension.value},service}} MetricName=\"{metric.value}\"', "
                f"'{statistic}', {int(PERIOD.to_seconds())})"
            )
            return cloudwatch.MathExpression(expression=search, label=label, using_metrics={}, period=PERIOD)

        transitions = [
            cloudwatch.Metric(
                namespace=NAMESPACE,
                metric_name=Metric.STUDY_TRANSITIONS.value,
                dimensions_map={Dimension.STATUS.value: status.value, "service": SERVICE},
                statistic="Sum",
                period=PERIOD,
                label=status.value,
            )
            for status in StudyStatus
        ]
        self.dashboard.add_widgets(
            cloudwatch.GraphWidget(title="Studies by status (transitions)", left=transitions, width=12),
            cloudwatch.GraphWidget(
                title="Step duration (ms, average)",
                left=[by(Metric.STEP_DURATION, Dimension.STEP, "Average", "step")],
                width=12,
            ),
        )
        self.dashboard.add_widgets(
            cloudwatch.GraphWidget(
                title="Rejections by reason",
                left=[by(Metric.REJECTIONS, Dimension.REASON, "Sum", "reason")],
                width=6,
            ),
            cloudwatch.GraphWidget(
                title="Failures by error type",
                left=[by(Metric.FAILURES, Dimension.ERROR_TYPE, "Sum", "error")],
                width=6,
            ),
            cloudwatch.GraphWidget(
                title="Queue age at dispatch (s, max)",
                left=[by(Metric.QUEUE_AGE, Dimension.QUEUE, "Maximum", "queue")],
                width=6,
            ),
            cloudwatch.GraphWidget(
                title="Webhooks, reaper, unpublished events",
                left=[
                    by(Metric.WEBHOOK_DELIVERIES, Dimension.OUTCOME, "Sum", "webhook"),
                    by(Metric.REAPED, Dimension.ACTION, "Sum", "reaped"),
                    by(Metric.EVENTS_NOT_PUBLISHED, Dimension.STATUS, "Sum", "unpublished"),
                ],
                width=6,
            ),
        )
        self.dashboard.add_widgets(
            cloudwatch.GraphWidget(
                title="GPU workers (active, submitted)",
                left=[by(Metric.GPU_WORKERS, Dimension.STATE, "Maximum", "workers")],
                width=12,
            ),
        )
