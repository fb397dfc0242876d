"""Alarms, dashboard, SNS topic, event bus and schedules of the synthesized stack (aws_cdk.assertions)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from aws_cdk import App, Stack
from aws_cdk import aws_sns as sns
from aws_cdk.assertions import Match, Template

from infra.monitoring import ALARM_EMAIL_CONTEXT, WORK_QUEUE_OLDEST_S, Monitoring
from voxelpipe.function_specs import WEBHOOK
from voxelpipe.gpu_settings import GpuSettings
from voxelpipe.telemetry import Metric
from voxelpipe.wiring import (
    DELIVERY_FAILED,
    EVENT_SOURCE,
    FUNCTION_TAG,
    STATUS_CHANGED,
    STUDY_DELIVERED,
    Resource,
)
from voxelpipe.workflow_settings import WEBHOOK_MAX_RECEIVE_COUNT


def _resources(template: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {lid: r for lid, r in template["Resources"].items() if r["Type"] == kind}


def _alarms(template: dict[str, Any]) -> list[dict[str, Any]]:
    return [r["Properties"] for r in _resources(template, "AWS::CloudWatch::Alarm").values()]


def _queue_of(alarm: dict[str, Any]) -> str | None:
    for dimension in alarm.get("Dimensions", []):
        if dimension["Name"] == "QueueName":
            return dimension["Value"]["Fn::GetAtt"][0]
    return None


def _topic(template: dict[str, Any]) -> str:
    (topic,) = _resources(template, "AWS::SNS::Topic")
    return topic


def test_every_dead_letter_queue_alarms_on_its_first_message(template: dict[str, Any]):
    queues = _resources(template, "AWS::SQS::Queue")
    dead_letters = {
        q["Properties"]["RedrivePolicy"]["deadLetterTargetArn"]["Fn::GetAtt"][0]
        for q in queues.values()
        if "RedrivePolicy" in q["Properties"]
    }
    dead_letters |= {lid for lid in queues if lid.startswith("IngestFailures")}
    assert len(dead_letters) >= 4  # two work queues, the webhook queue, ingest's failed events
    depth_alarmed = {
        _queue_of(a)
        for a in _alarms(template)
        if a["MetricName"] == "ApproximateNumberOfMessagesVisible"
        and a["Threshold"] == 1
        and a["ComparisonOperator"] == "GreaterThanOrEqualToThreshold"
    }
    assert dead_letters <= depth_alarmed


def test_every_work_queue_alarms_on_the_age_of_its_oldest_message(template: dict[str, Any]):
    sources = {
        lid
        for lid, q in _resources(template, "AWS::SQS::Queue").items()
        if "RedrivePolicy" in q["Properties"]
    }
    ages = {
        _queue_of(a): a["Threshold"]
        for a in _alarms(template)
        if a["MetricName"] == "ApproximateAgeOfOldestMessage"
    }
    assert sources == set(ages)
    work = [
        lid
        for lid in sources
        if not lid.startswith(
            (Resource.WEBHOOK_QUEUE, Resource.GPU_QUEUE, Resource.LIVE_QUEUE, Resource.DELIVERY_QUEUE)
        )
    ]
    assert len(work) == 3 and all(ages[lid] == WORK_QUEUE_OLDEST_S for lid in work)
    # Deliveries back off for hours before their DLQ: their oldest message may be that old.
    (deliveries,) = [lid for lid in sources if lid.startswith(Resource.DELIVERY_QUEUE)]
    assert ages[deliveries] == 3 * 3600
    # Live progress older than that is news no more: it alarms like a work queue.
    (live,) = [lid for lid in sources if lid.startswith(Resource.LIVE_QUEUE)]
    assert ages[live] == WORK_QUEUE_OLDEST_S
    # A GPU task waiting longer than its task timeout has lost its token.
    (gpu,) = [lid for lid in sources if lid.startswith(Resource.GPU_QUEUE)]
    assert ages[gpu] == GpuSettings().task_timeout_s


def test_the_state_machine_alarms_on_failures_timeouts_and_throttles(template: dict[str, Any]):
    (machine,) = _resources(template, "AWS::StepFunctions::StateMachine")
    alarmed = {
        a["MetricName"]
        for a in _alarms(template)
        if a["Namespace"] == "AWS/States" and a["Dimensions"][0]["Value"] == {"Ref": machine}
    }
    assert alarmed == {"ExecutionsFailed", "ExecutionsTimedOut", "ExecutionThrottled"}


def test_every_function_alarms_on_errors_and_throttles(template: dict[str, Any]):
    functions = {
        lid
        for lid, f in _resources(template, "AWS::Lambda::Function").items()
        if any(tag["Key"] == FUNCTION_TAG for tag in f["Properties"].get("Tags", []))
    }
    for metric in ("Errors", "Throttles"):
        alarmed = {
            a["Dimensions"][0]["Value"]["Ref"]
            for a in _alarms(template)
            if a["Namespace"] == "AWS/Lambda" and a["MetricName"] == metric
        }
        assert alarmed == functions


def test_every_alarm_notifies_the_encrypted_tls_only_topic(template: dict[str, Any]):
    topic = _topic(template)
    alarms = _alarms(template)
    assert alarms and all(a["AlarmActions"] == [{"Ref": topic}] for a in alarms)
    stack = Template.from_json(template)
    stack.has_resource_properties("AWS::SNS::Topic", {"KmsMasterKeyId": Match.any_value()})
    stack.has_resource_properties(
        "AWS::SNS::TopicPolicy",
        {
            "PolicyDocument": {
                "Statement": Match.array_with(
                    [
                        Match.object_like(
                            {"Effect": "Deny", "Condition": {"Bool": {"aws:SecureTransport": "false"}}}
                        )
                    ]
                )
            }
        },
    )
    assert not _resources(template, "AWS::SNS::Subscription")  # no e-mail in the context


def test_an_email_from_the_context_subscribes_to_the_alarms():
    app = App(context={ALARM_EMAIL_CONTEXT: "oncall@example.org"})
    stack = Stack(app, "Probe")
    Monitoring(
        stack,
        "Monitoring",
        topic=sns.Topic(stack, "AlarmTopic"),
        alarm_email=stack.node.try_get_context(ALARM_EMAIL_CONTEXT),
    )
    Template.from_stack(stack).has_resource_properties(
        "AWS::SNS::Subscription", {"Protocol": "email", "Endpoint": "oncall@example.org"}
    )


def test_the_dashboard_shows_the_pipeline_metrics_queues_executions_and_functions(template: dict[str, Any]):
    (dashboard,) = _resources(template, "AWS::CloudWatch::Dashboard").values()
    body = json.dumps(dashboard["Properties"]["DashboardBody"])
    for metric in Metric:
        assert metric.value in body
    for name in ("ApproximateAgeOfOldestMessage", "ExecutionsStarted", "Errors", "Throttles", "Duration"):
        assert name in body


def test_status_changes_go_from_the_bus_to_the_webhook_queue_and_the_reaper_runs_every_5_minutes(
    template: dict[str, Any],
):
    (bus,) = _resources(template, "AWS::Events::EventBus")
    rules = _resources(template, "AWS::Events::Rule")
    (to_webhooks,) = [
        r["Properties"]
        for r in rules.values()
        if "EventPattern" in r["Properties"]
        and r["Properties"]["Targets"][0]["Arn"]["Fn::GetAtt"][0].startswith(Resource.WEBHOOK_QUEUE)
    ]
    assert to_webhooks["EventBusName"] == {"Ref": bus}
    assert to_webhooks["EventPattern"] == {
        "source": [EVENT_SOURCE],
        "detail-type": [STATUS_CHANGED, STUDY_DELIVERED, DELIVERY_FAILED],
    }
    (target,) = to_webhooks["Targets"]
    assert target["Arn"]["Fn::GetAtt"][0].startswith(Resource.WEBHOOK_QUEUE)
    (schedule,) = [
        r["Properties"]
        for r in rules.values()
        if "ScheduleExpression" in r["Properties"]
        and r["Properties"]["Targets"][0]["Arn"]["Fn::GetAtt"][0].startswith("ReaperFunction")
    ]
    assert schedule["ScheduleExpression"] == "rate(5 minutes)"


def test_the_webhook_queue_retries_before_its_dead_letters_and_is_encrypted(template: dict[str, Any]):
    queues = _resources(template, "AWS::SQS::Queue")
    (webhook,) = [
        q["Properties"]
        for lid, q in queues.items()
        if lid.startswith(Resource.WEBHOOK_QUEUE) and "RedrivePolicy" in q["Properties"]
    ]
    assert webhook["RedrivePolicy"]["maxReceiveCount"] == WEBHOOK_MAX_RECEIVE_COUNT >= 5
    assert webhook["VisibilityTimeout"] >= 6 * WEBHOOK.timeout_s
    assert "KmsMasterKeyId" in webhook  # the stack's data key


@pytest.mark.parametrize(
    ("function", "action"),
    [("ReaperFunction", "states:StopExecution"), ("WebhookFunction", "sqs:ChangeMessageVisibility")],
)
def test_the_reaper_may_stop_executions_and_the_webhook_may_delay_retries(
    template: dict[str, Any], function: str, action: str
):
    policies = [
        p["Properties"]
        for p in _resources(template, "AWS::IAM::Policy").values()
        if any(role["Ref"].startswith(function) for role in p["Properties"]["Roles"])
    ]
    actions: set[str] = set()
    for policy in policies:
        for statement in policy["PolicyDocument"]["Statement"]:
            listed = statement["Action"]
            actions |= {listed} if isinstance(listed, str) else set(listed)
    assert action in actions
