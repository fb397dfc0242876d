"""The GPU half of the synthesized stack: fan-out state, queue, Batch workers, scaler, grants."""

from __future__ import annotations

import json
from typing import Any

import pytest
from aws_cdk.assertions import Match, Template

from infra.local.template import cached_template
from tests.fixtures.gpu import GPU_CONTEXT, GPU_HEARTBEAT_S, GPU_RETRY_ATTEMPTS
from voxelpipe.gpu_settings import GPU_QUEUE_MAX_RECEIVE_COUNT, GPU_RETRIED_ERRORS, GpuSettings
from voxelpipe.wiring import EnvVar

DEFAULTS = GpuSettings()


def _resources(template: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {lid: r for lid, r in template["Resources"].items() if r["Type"] == kind}


def _logical_id(template: dict[str, Any], kind: str, prefix: str) -> str:
    (found,) = [lid for lid in _resources(template, kind) if lid.startswith(prefix) and "Dead" not in lid]
    return found


def _states(template: dict[str, Any]) -> dict[str, Any]:
    (machine,) = _resources(template, "AWS::StepFunctions::StateMachine").values()
    parts = machine["Properties"]["DefinitionString"]["Fn::Join"][1]
    # References sit inside JSON strings (ARNs, the queue URL): they become the text REF.
    definition = json.loads("".join(p if isinstance(p, str) else "REF" for p in parts))
    found: dict[str, Any] = {}

    def walk(states: dict[str, Any]) -> None:
        for name, state in states.items():
            found[name] = state
            if "ItemProcessor" in state:
                walk(state["ItemProcessor"]["States"])

    walk(definition["States"])
    return found


@pytest.fixture(scope="module")
def short(template: dict[str, Any]) -> dict[str, Any]:
    return cached_template(GPU_CONTEXT)


def test_gpu_analyses_wait_for_a_task_token_with_heartbeat_timeout_and_retries(template: dict[str, Any]):
    states = _states(template)
    choices = {c["StringEquals"]: c["Next"] for c in states["ByRuntime"]["Choices"]}
    assert choices == {"lambda": "RunAnalysis", "gpu": "RunOnGpu"}
    gpu = states["RunOnGpu"]
    assert gpu["Resource"].endswith(":states:::sqs:sendMessage.waitForTaskToken")
    assert (
        gpu["HeartbeatSeconds"] == DEFAULTS.heartbeat_s and gpu["TimeoutSeconds"] == DEFAULTS.task_timeout_s
    )
    assert gpu["Parameters"]["MessageBody"]["task_token.$"] == "$$.Task.Token"
    assert set(gpu["Parameters"]["MessageBody"]) == {
        "task_token.$", "study_id.$", "attempt.$", "analysis.$", "volume.$", "subject.$"
    }  # fmt: skip
    (retry,) = gpu["Retry"]
    assert (
        retry["ErrorEquals"] == list(GPU_RETRIED_ERRORS) and retry["MaxAttempts"] == DEFAULTS.retry_attempts
    )
    assert "Catch" not in gpu  # a failure fails the Map, whose Catch marks the study FAILED
    assert states["RunAnalyses"]["Catch"][0]["Next"] == "MarkFailed"


def test_context_overrides_the_gpu_settings(short: dict[str, Any]):
    gpu = _states(short)["RunOnGpu"]
    assert gpu["HeartbeatSeconds"] == GPU_HEARTBEAT_S and gpu["Retry"][0]["MaxAttempts"] == GPU_RETRY_ATTEMPTS
    queue = short["Resources"][_logical_id(short, "AWS::SQS::Queue", "GpuQueue")]
    assert queue["Properties"]["VisibilityTimeout"] == 2 * GPU_HEARTBEAT_S
    # Dispatch routes tissue-seg to the GPU workers; the API lists it with that runtime.
    for name in ("dispatch", "api"):
        (function,) = [
            r for r in _resources(short, "AWS::Lambda::Function").values()
            if {"Key": "voxelpipe:function", "Value": name} in r["Properties"].get("Tags", [])
        ]  # fmt: skip
        assert function["Properties"]["Environment"]["Variables"][EnvVar.GPU_ANALYSES] == "tissue-seg", name


def test_gpu_queue_is_encrypted_tls_only_with_a_dead_letter_queue(template: dict[str, Any]):
    stack = Template.from_json(template)
    queue_id = _logical_id(template, "AWS::SQS::Queue", "GpuQueue")
    queue = template["Resources"][queue_id]["Properties"]
    assert "KmsMasterKeyId" in queue  # the stack's data key
    assert queue["VisibilityTimeout"] == DEFAULTS.visibility_timeout_s
    assert queue["RedrivePolicy"]["maxReceiveCount"] == GPU_QUEUE_MAX_RECEIVE_COUNT
    stack.has_resource_properties(
        "AWS::SQS::QueuePolicy",
        {
            "Queues": [{"Ref": queue_id}],
            "PolicyDocument": {
                "Statement": Match.array_with(
                    [
                        Match.object_like(
                            {"Effect": "Deny", "Condition": {"Bool": {"aws:SecureTransport": "false"}}}
                        )
                    ]
                )
            },
        },
    )
    # The state machine's role may send to it.
    stack.has_resource_properties(
        "AWS::IAM::Policy",
        {
            "PolicyDocument": {
                "Statement": Match.array_with(
                    [
                        Match.object_like(
                            {"Action": "sqs:SendMessage", "Resource": {"Fn::GetAtt": [queue_id, "Arn"]}}
                        )
                    ]
                )
            }
        },
    )


def test_batch_gpu_workers_scale_from_zero_in_private_subnets(template: dict[str, Any]):
    (compute,) = _resources(template, "AWS::Batch::ComputeEnvironment").values()
    resources = compute["Properties"]["ComputeResources"]
    assert resources["MinvCpus"] == 0 and resources["InstanceTypes"] == list(DEFAULTS.instance_types)
    assert resources["Ec2Configuration"] == [{"ImageType": "ECS_AL2_NVIDIA"}]
    assert _resources(template, "AWS::EC2::FlowLog")
    (endpoint,) = _resources(template, "AWS::EC2::VPCEndpoint").values()
    assert endpoint["Properties"]["VpcEndpointType"] == "Gateway"
    (job,) = _resources(template, "AWS::Batch::JobDefinition").values()
    container = job["Properties"]["ContainerProperties"]
    assert {"Type": "GPU", "Value": "1"} in container["ResourceRequirements"]
    env = {item["Name"]: item["Value"] for item in container["Environment"]}
    assert env[EnvVar.GPU_QUEUE_URL] == {"Ref": _logical_id(template, "AWS::SQS::Queue", "GpuQueue")}
    assert env[EnvVar.GPU_HEARTBEAT_S] == str(DEFAULTS.heartbeat_s)
    assert "cdk-hnb659fds-container-assets" in json.dumps(container["Image"])  # built at deploy time


def test_the_job_role_answers_task_tokens_of_the_state_machine_only(template: dict[str, Any]):
    (job,) = _resources(template, "AWS::Batch::JobDefinition").values()
    role_id = job["Properties"]["ContainerProperties"]["JobRoleArn"]["Fn::GetAtt"][0]
    statements = [
        statement
        for policy in _resources(template, "AWS::IAM::Policy").values()
        if {"Ref": role_id} in policy["Properties"]["Roles"]
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]
    ]
    (answers,) = [s for s in statements if "states:SendTaskSuccess" in s["Action"]]
    assert set(answers["Action"]) == {
        "states:SendTaskSuccess",
        "states:SendTaskFailure",
        "states:SendTaskHeartbeat",
    }
    machine_id = next(iter(_resources(template, "AWS::StepFunctions::StateMachine")))
    assert answers["Resource"] == {"Ref": machine_id}
    assert all(s["Resource"] != "*" for s in statements)


def test_the_scaler_runs_every_minute_and_may_submit_worker_jobs(template: dict[str, Any]):
    (rule,) = [
        r
        for lid, r in _resources(template, "AWS::Events::Rule").items()
        if r["Properties"].get("ScheduleExpression") == "rate(1 minute)" and "Scaler" in lid
    ]
    target = rule["Properties"]["Targets"][0]["Arn"]["Fn::GetAtt"][0]
    scaler = template["Resources"][target]["Properties"]
    assert {"Key": "voxelpipe:function", "Value": "scaler"} in scaler["Tags"]
    for var in (
        EnvVar.GPU_QUEUE_URL,
        EnvVar.GPU_JOB_QUEUE,
        EnvVar.GPU_JOB_DEFINITION,
        EnvVar.GPU_MAX_WORKERS,
    ):
        assert var in scaler["Environment"]["Variables"]
    role = scaler["Role"]["Fn::GetAtt"][0]
    actions = {
        action
        for policy in _resources(template, "AWS::IAM::Policy").values()
        if {"Ref": role} in policy["Properties"]["Roles"]
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]
        for action in ([statement["Action"]] if isinstance(statement["Action"], str) else statement["Action"])
    }
    assert {"batch:SubmitJob", "batch:ListJobs", "sqs:GetQueueAttributes"} <= actions
