"""Status-change events and webhooks, and the reaper's schedule.

The bus, the webhook queue and the signing secret sit at the stack's top level, their construct
ids from wiring.Resource, like the rest of the stack's named resources.
"""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_event_sources as event_sources
from aws_cdk import aws_secretsmanager as secretsmanager
from constructs import Construct

from infra import nag
from infra.security import StackSecurity, grant_queue_send
from voxelpipe.wiring import (
    DELIVERY_FAILED,
    EVENT_SOURCE,
    STATUS_CHANGED,
    STUDY_DELIVERED,
    EnvVar,
    Resource,
)
from voxelpipe.workflow_settings import (
    BATCH_SWEEP_INTERVAL_MIN,
    DELIVERY_BATCH_SIZE,
    DELIVERY_MAX_RECEIVE_COUNT,
    DELIVERY_VISIBILITY_TIMEOUT_S,
    REAPER_INTERVAL_MIN,
    TRANSFER_SWEEP_INTERVAL_MIN,
    WEBHOOK_BATCH_SIZE,
    WEBHOOK_MAX_RECEIVE_COUNT,
    WEBHOOK_VISIBILITY_TIMEOUT_S,
)


class StudyNotifications:
    """The event bus every status change goes to, and what delivers webhooks from it."""

    def __init__(self, scope: Construct, security: StackSecurity) -> None:
        self.bus = events.EventBus(scope, Resource.EVENT_BUS)
        self.webhook_queue = security.queue_with_dead_letters(
            scope,
            Resource.WEBHOOK_QUEUE,
            max_receive_count=WEBHOOK_MAX_RECEIVE_COUNT,
            visibility_timeout=Duration.seconds(WEBHOOK_VISIBILITY_TIMEOUT_S),
            retention_period=Duration.days(4),
        )
        # The key webhook signing keys derive from (voxelpipe.webhooks): rotating it changes every
        # study's key, so it is not rotated automatically.
        self.webhook_secret = secretsmanager.Secret(
            scope,
            Resource.WEBHOOK_SECRET,
            description="voxelpipe: the key each study's webhook signing key is derived from",
            encryption_key=security.data_key,
            generate_secret_string=secretsmanager.SecretStringGenerator(
                exclude_punctuation=True, password_length=64
            ),
        )
        nag.acknowledge(self.webhook_secret, *nag.WEBHOOK_SECRET)
        # EventBridge writes to the encrypted webhook queue with the data key.
        security.data_key.grant_encrypt_decrypt(iam.ServicePrincipal("events.amazonaws.com"))
        self.status_changes = events.Rule(
            scope,
            "StatusChangesToWebhooks",
            event_bus=self.bus,
            event_pattern=events.EventPattern(
                source=[EVENT_SOURCE], detail_type=[STATUS_CHANGED, STUDY_DELIVERED, DELIVERY_FAILED]
            ),
            targets=[targets.SqsQueue(self.webhook_queue)],
        )
        # Deliveries (docs/deliveries.md): a COMPLETED study's event plans its deliveries, on the
        # same queue its delivery messages then go through (retried with backoff, then the DLQ).
        # A rule, not a call from Finalize: the event is put once the COMPLETED write is made, and
        # EventBridge's own retries and the queue's make the planning as reliable as the webhooks.
        self.delivery_queue = security.queue_with_dead_letters(
            scope,
            Resource.DELIVERY_QUEUE,
            max_receive_count=DELIVERY_MAX_RECEIVE_COUNT,
            visibility_timeout=Duration.seconds(DELIVERY_VISIBILITY_TIMEOUT_S),
            retention_period=Duration.days(4),
        )
        self.completed_studies = events.Rule(
            scope,
            "CompletedStudiesToDeliveries",
            event_bus=self.bus,
            event_pattern=events.EventPattern(
                source=[EVENT_SOURCE], detail_type=[STATUS_CHANGED], detail={"status": ["COMPLETED"]}
            ),
            targets=[targets.SqsQueue(self.delivery_queue)],
        )
        self.resources = {
            Resource.EVENT_BUS,
            Resource.WEBHOOK_QUEUE,
            Resource.WEBHOOK_SECRET,
            Resource.DELIVERY_QUEUE,
        }

    def bind(self, function: lambda_.Function, var: EnvVar, resource: Resource) -> None:
        """Give a function the resource an environment variable names, and the right to use it."""
        if resource is Resource.EVENT_BUS:
            function.add_environment(var, self.bus.event_bus_name)
            self.bus.grant_put_events_to(function)
        elif resource is Resource.WEBHOOK_SECRET:
            function.add_environment(var, self.webhook_secret.secret_arn)
            self.webhook_secret.grant_read(function)
        elif resource is Resource.WEBHOOK_QUEUE:
            function.add_environment(var, self.webhook_queue.queue_url)
            self.webhook_queue.grant(function, "sqs:ChangeMessageVisibility")
        elif resource is Resource.DELIVERY_QUEUE:
            function.add_environment(var, self.delivery_queue.queue_url)
            grant_queue_send(self.delivery_queue, function)  # plans deliveries, redrives
        else:
            raise ValueError(f"{resource} is not a notification resource")

    def deliver_with(self, webhook: lambda_.Function) -> None:
        webhook.add_event_source(
            event_sources.SqsEventSource(
                self.webhook_queue, batch_size=WEBHOOK_BATCH_SIZE, report_batch_item_failures=True
            )
        )

    def deliver_outputs_with(self, egress: lambda_.Function) -> None:
        # The consumer backs a failed delivery off by hiding its message longer.
        self.delivery_queue.grant(egress, "sqs:ChangeMessageVisibility")
        egress.add_event_source(
            event_sources.SqsEventSource(
                self.delivery_queue, batch_size=DELIVERY_BATCH_SIZE, report_batch_item_failures=True
            )
        )

    @staticmethod
    def _every(scope: Construct, construct_id: str, function: lambda_.Function, minutes: int) -> events.Rule:
        return events.Rule(
            scope,
            construct_id,
            schedule=events.Schedule.rate(Duration.minutes(minutes)),
            targets=[targets.LambdaFunction(function, retry_attempts=0)],
        )

    @staticmethod
    def schedule_reaper(scope: Construct, reaper: lambda_.Function) -> events.Rule:
        return StudyNotifications._every(scope, "ReaperSchedule", reaper, REAPER_INTERVAL_MIN)

    @staticmethod
    def schedule_transfer_completion(scope: Construct, sweep: lambda_.Function) -> events.Rule:
        return StudyNotifications._every(
            scope, "TransferCompletionSchedule", sweep, TRANSFER_SWEEP_INTERVAL_MIN
        )

    @staticmethod
    def schedule_reprocess_batches(scope: Construct, sweep: lambda_.Function) -> events.Rule:
        return StudyNotifications._every(scope, "ReprocessBatchesSchedule", sweep, BATCH_SWEEP_INTERVAL_MIN)
