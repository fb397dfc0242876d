"""The DICOM receiver in the synthesized stack: its task's environment and exactly the grants
infra/access.py declares; its service in private subnets behind an internal NLB by default."""

from __future__ import annotations

from typing import Any

from voxelpipe.function_specs import DICOM_RECEIVER
from voxelpipe.wiring import ENV_RESOURCES, FUNCTION_TAG, EnvVar, Resource


def _of_type(template: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {lid: r["Properties"] for lid, r in template["Resources"].items() if r["Type"] == kind}


def _task(template: dict[str, Any]) -> dict[str, Any]:
    (task,) = _of_type(template, "AWS::ECS::TaskDefinition").values()
    return task


def _statements(template: dict[str, Any]) -> list[dict[str, Any]]:
    role = _task(template)["TaskRoleArn"]["Fn::GetAtt"][0]
    return [
        statement
        for policy in _of_type(template, "AWS::IAM::Policy").values()
        if {"Ref": role} in policy["Roles"]
        for statement in policy["PolicyDocument"]["Statement"]
    ]


def _logical_id(template: dict[str, Any], resource: Resource) -> str:
    """The resource's logical id: its construct id and CDK's 8-character hash."""
    (found,) = [lid for lid in template["Resources"] if lid[:-8] == resource.value]
    return found


def test_the_task_is_told_of_its_resources_and_settings(template: dict[str, Any]):
    task = _task(template)
    assert {"Key": FUNCTION_TAG, "Value": DICOM_RECEIVER.name} in task["Tags"]
    (container,) = task["ContainerDefinitions"]
    env = {item["Name"]: item["Value"] for item in container["Environment"]}
    assert {str(var) for var in DICOM_RECEIVER.env} <= set(env)
    assert env[EnvVar.DICOM_PORT] == "11112"
    assert env[EnvVar.DICOM_AE_TITLES] == "{}"  # cdk.json names none: the service runs no task
    assert container["ReadonlyRootFilesystem"] is True
    assert task["RequiresCompatibilities"] == ["FARGATE"] and task["NetworkMode"] == "awsvpc"


def test_the_task_role_may_write_uploads_and_use_its_tables_and_nothing_else(template: dict[str, Any]):
    statements = _statements(template)
    bucket = _logical_id(template, Resource.BUCKET)
    s3 = [s for s in statements if any(str(a).startswith("s3:") for a in _list(s["Action"]))]
    assert [(s["Action"], s["Resource"]) for s in s3] == [
        ("s3:PutObject", {"Fn::Join": ["", [{"Fn::GetAtt": [bucket, "Arn"]}, "/uploads/*"]]})
    ]
    tables = {
        str(ref)
        for s in statements
        if any(str(a).startswith("dynamodb:") for a in _list(s["Action"]))
        for resource in _list(s["Resource"])
        for ref in [resource.get("Fn::GetAtt", [None])[0] if isinstance(resource, dict) else resource]
        if ref
    }
    told = {ENV_RESOURCES[var] for var in DICOM_RECEIVER.env if ENV_RESOURCES.get(var) is not None}
    expected = {_logical_id(template, r) for r in told if r.value.endswith("Table")}
    assert tables == expected
    actions = {a for s in statements for a in _list(s["Action"])}
    assert not {a for a in actions if a.startswith(("sqs:", "states:", "lambda:", "batch:"))}
    assert "events:PutEvents" in actions


def test_the_service_is_private_behind_an_internal_nlb(template: dict[str, Any]):
    (service,) = _of_type(template, "AWS::ECS::Service").values()
    network = service["NetworkConfiguration"]["AwsvpcConfiguration"]
    assert network["AssignPublicIp"] == "DISABLED"
    (balancer,) = _of_type(template, "AWS::ElasticLoadBalancingV2::LoadBalancer").values()
    assert balancer["Type"] == "network" and balancer["Scheme"] == "internal"
    attributes = {a["Key"]: a["Value"] for a in balancer["LoadBalancerAttributes"]}
    assert attributes["access_logs.s3.enabled"] == "true"
    (listener,) = _of_type(template, "AWS::ElasticLoadBalancingV2::Listener").values()
    assert (listener["Protocol"], listener["Port"]) == ("TCP", 11112)
    groups = _of_type(template, "AWS::EC2::SecurityGroup").values()
    (group,) = [g for g in groups if "DICOM" in g["GroupDescription"]]
    (ingress,) = group["SecurityGroupIngress"]
    assert (ingress["FromPort"], ingress["ToPort"]) == (11112, 11112)
    assert "Fn::GetAtt" in ingress["CidrIp"]  # the VPC's own range, never 0.0.0.0/0


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]
