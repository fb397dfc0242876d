"""The local cloud runs what CDK synthesizes: same definition, same wiring."""

from __future__ import annotations

import json
from typing import Any

import boto3
from botocore.exceptions import ClientError

from infra.local.cloud import LocalCloud
from infra.local.template import CACHE_DIR
from voxelpipe.function_specs import FUNCTIONS
from voxelpipe.wiring import EnvVar


def _definition_parts(template: dict[str, Any]) -> list[Any]:
    (machine,) = [
        r for r in template["Resources"].values() if r["Type"] == "AWS::StepFunctions::StateMachine"
    ]
    return machine["Properties"]["DefinitionString"]["Fn::Join"][1]  # type: ignore[no-any-return]


def test_executed_definition_is_the_synthesized_one_modulo_arns(cloud: LocalCloud, template: dict[str, Any]):
    parts = _definition_parts(template)
    executed = boto3.client("stepfunctions").describe_state_machine(stateMachineArn=cloud.state_machine_arn)[
        "definition"
    ]
    # References (function ARNs, the GPU queue's URL, the partition) filled in, nothing else changed.
    references = [p for p in parts if not isinstance(p, str)]
    assert any("Fn::GetAtt" in p for p in references), "the definition names its Lambda functions"
    assert executed == "".join(p if isinstance(p, str) else str(cloud.deployment.resolve(p)) for p in parts)
    assert json.loads(executed)["StartAt"] == "Prepare"


def test_every_function_is_deployed_with_its_template_environment(
    cloud: LocalCloud, template: dict[str, Any]
):
    client = boto3.client("lambda")
    deployed = {spec for spec in cloud.deployment.function_specs.values()}
    assert deployed == {spec.name for spec in FUNCTIONS}
    for name, spec in cloud.deployment.function_specs.items():
        env = client.get_function_configuration(FunctionName=name)["Environment"]["Variables"]
        assert env == cloud.deployment.function_env[spec]
    # Resource names resolve to what moto created.
    boto3.client("s3").head_bucket(Bucket=cloud.env(EnvVar.BUCKET))
    boto3.client("dynamodb").describe_table(TableName=cloud.env(EnvVar.STUDIES_TABLE))
    boto3.client("sqs").get_queue_attributes(QueueUrl=cloud.env(EnvVar.HIGH_PRIORITY_QUEUE_URL))


def test_event_sources_and_notifications_are_wired_as_in_the_template(cloud: LocalCloud):
    mappings = boto3.client("lambda").list_event_source_mappings()["EventSourceMappings"]
    consumers: dict[str, set[str]] = {}
    for m in mappings:
        function = cloud.deployment.function_specs[m["FunctionArn"].rsplit(":", 1)[-1]]
        consumers.setdefault(function, set()).add(m["EventSourceArn"])
    # dispatch drains the three work queues (high, normal, low); webhook the queue the status-change
    # rule feeds; egress the delivery queue (docs/deliveries.md).
    assert {function: len(arns) for function, arns in consumers.items()} == {
        "dispatch": 3,
        "webhook": 1,
        "live_push": 1,
        "egress": 1,
    }
    notification = boto3.client("s3").get_bucket_notification_configuration(Bucket=cloud.bucket)
    (config,) = notification["LambdaFunctionConfigurations"]
    assert cloud.deployment.function_specs[config["LambdaFunctionArn"].rsplit(":", 1)[-1]] == "ingest"


def test_a_call_its_role_does_not_allow_fails_as_in_aws_and_is_recorded(cloud: LocalCloud):
    """The local IAM: a function's call outside its role's policies is denied, whatever catches it."""
    s3 = boto3.client("s3")
    s3.put_object(Bucket=cloud.bucket, Key="derived/s/results.json", Body=b"{}")

    def reads(event: Any, context: Any) -> dict[str, Any]:
        s3.list_objects_v2(Bucket=cloud.bucket, Prefix="uploads/demo/s/")  # ingest may list uploads/
        try:
            s3.get_object(Bucket=cloud.bucket, Key="derived/s/results.json")  # ...but not derived/
        except ClientError as error:
            return {"denied": error.response["Error"]["Code"]}
        return {"denied": None}

    with cloud.override("ingest", reads):
        payload, error = cloud.invoke("ingest", {})
    assert (payload, error) == ({"denied": "AccessDenied"}, None)
    (denial,) = cloud.iam.denials
    assert (denial.principal, denial.request.action) == ("ingest", "s3:GetObject")
    assert denial.request.resource.endswith("/derived/s/results.json")
    s3.get_object(Bucket=cloud.bucket, Key="derived/s/results.json")  # the test itself acts as no one
    cloud.iam.denials.clear()  # seen: the fixture's check is for denials nobody expected


def test_the_cached_template_names_the_sources_synthesis_imported(template: dict[str, Any]):
    """The cache (infra/local/template.py) keeps the digest of every file of this tree that a real
    synthesis imported: the stack's modules and the voxelpipe modules that describe the cloud."""
    entry = json.loads((CACHE_DIR / "template.json").read_text())
    assert entry["template"] == template
    package = "layers/voxelpipe/python/voxelpipe"
    for source in (
        "cdk.json",
        "infra/synth.py",
        "infra/stack.py",
        f"{package}/wiring.py",
        f"{package}/function_specs.py",
        f"{package}/workflow_settings.py",
        f"{package}/gpu_settings.py",
    ):
        assert entry["sources"].get(source), source
