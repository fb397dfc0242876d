"""Compliance gates: cdk-nag (AwsSolutions + HIPAA Security) during synthesis, and cfn-lint.

The nag packs are validation plugins on every app build_app makes, so any synthesis fails on an
unacknowledged finding; these tests show that this one passes with nothing left over, that the
gate does fail on a non-compliant resource, and that cfn-lint finds no errors in the templates.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aws_cdk import App, Stack, Validations
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_sqs as sqs
from cfnlint.api import ManualArgs, lint

from infra import nag
from infra.dicom_receiver import AE_TITLES_CONTEXT, INTERNET_FACING_CONTEXT, TLS_CONTEXT
from infra.identity_settings import (
    API_ENDPOINT_CONTEXT,
    CALLBACK_URLS_CONTEXT,
    CLIENT_CIDRS_CONTEXT,
    DOMAIN_CONTEXT,
    LOGOUT_URLS_CONTEXT,
    PROVIDERS_CONTEXT,
)
from infra.layers import stand_in_layers
from infra.pipeline import PIPELINE_CONTEXT, PIPELINE_STACK_NAME, STACK_NAME, PipelineConfig, PipelineStack
from infra.security import StackSecurity, retention
from infra.settings import CORS_ALLOWED_ORIGINS, DERIVED_TRANSITION_DAYS, StackSettings
from infra.synth import build_app
from voxelpipe.federation import IDP_GROUPS_ATTRIBUTE_NAME
from voxelpipe.gpu_settings import GPU_CONTEXT_PREFIX
from voxelpipe.wiring import CLI_CALLBACK_URL, EnvVar

# A context value other than the default, to show the derived/ transition follows it.
TRANSITION_DAYS = 45
# Browser origins the REST API allows (CORS): the packs check the preflight methods they add too.
CORS_ORIGINS = ["https://viewer.example.org", "https://lab.example.org"]

MAX_WORKERS = f"{GPU_CONTEXT_PREFIX}max_workers"
DICOM_CERTIFICATE = "arn:aws:acm:eu-west-1:222222222222:certificate/11111111-2222-3333-4444-555555555555"

# The dev stage signs people in through two identity providers and keeps its API private (the
# standalone stack has the defaults: neither), so that one synthesis checks both API modes.
CLIENT_CIDR = "10.20.0.0/16"
OIDC_SECRET_ARN = "arn:aws:secretsmanager:eu-west-1:111111111111:secret:voxelpipe/keycloak-AbCdEf"
CALLBACK_URLS = ["https://viewer.hospital-a.example/callback", "http://localhost:8765/callback"]
FEDERATED_PRIVATE = {
    API_ENDPOINT_CONTEXT: "private",
    CLIENT_CIDRS_CONTEXT: [CLIENT_CIDR],
    DOMAIN_CONTEXT: {"prefix": "hospital-a-voxelpipe"},
    CALLBACK_URLS_CONTEXT: CALLBACK_URLS,
    LOGOUT_URLS_CONTEXT: ["https://viewer.hospital-a.example/"],
    PROVIDERS_CONTEXT: [
        {
            "type": "saml",
            "name": "entra",
            "tenant": "hospital-a",
            "metadataUrl": "https://login.microsoftonline.com/t/federationmetadata/2007-06/federationmetadata.xml",
            "groupsAttribute": "http://schemas.microsoft.com/ws/2008/06/identity/claims/groups",
            "roles": {"6f1c0000-uploaders": "uploader"},
        },
        {
            "type": "oidc",
            "name": "keycloak",
            "tenant": "hospital-b",
            "issuer": "https://keycloak.hospital-b.example/realms/radiology",
            "clientId": "voxelpipe",
            "clientSecretArn": OIDC_SECRET_ARN,
            "clientSecretField": "client_secret",
            "groupsAttribute": "groups",
            "roles": {"/voxelpipe/admins": "admin"},
        },
    ],
}

# A pipeline to two accounts, so that the pipeline stack and both stages are checked too.
PIPELINE = {
    "connectionArn": "arn:aws:codeconnections:eu-west-1:111111111111:connection/0f1e2d3c-aaaa-bbbb-cccc-1234",
    "repository": "example-org/voxelpipe",
    "branch": "main",
    "stages": {
        "dev": {
            "account": "111111111111",
            "region": "eu-west-1",
            "context": {MAX_WORKERS: 2, **FEDERATED_PRIVATE},
        },
        "prod": {
            "account": "222222222222",
            "region": "eu-west-1",
            # The DICOM receiver on the internet, with DICOM TLS: the TLS listener is checked too.
            "context": {
                MAX_WORKERS: 16,
                AE_TITLES_CONTEXT: {"VOXELPIPE": "hospital-a"},
                TLS_CONTEXT: DICOM_CERTIFICATE,
                INTERNET_FACING_CONTEXT: True,
            },
        },
    },
}


@dataclass
class Synthesized:
    report: dict[str, Any]
    templates: dict[str, dict[str, Any]]  # path of the template under cdk.out -> template
    pipeline: PipelineStack


@pytest.fixture(scope="module")
def synthesized(tmp_path_factory: pytest.TempPathFactory) -> Synthesized:
    """One synthesis with the packs: the stack, and the pipeline with its dev and prod stages."""
    tmp = tmp_path_factory.mktemp("compliance")
    app, _ = build_app(
        layers_dir=stand_in_layers(tmp / "layers"),
        outdir=str(tmp / "cdk.out"),
        context={
            DERIVED_TRANSITION_DAYS: TRANSITION_DAYS,
            PIPELINE_CONTEXT: PIPELINE,
            CORS_ALLOWED_ORIGINS: CORS_ORIGINS,
        },
    )
    assembly = app.synth()  # raises on any unacknowledged finding
    out = Path(assembly.directory)
    report = json.loads((out / "validation-report.json").read_text())
    templates = {
        str(path.relative_to(out)): json.loads(path.read_text()) for path in out.rglob("*.template.json")
    }
    pipeline = app.node.find_child(PIPELINE_STACK_NAME)
    assert isinstance(pipeline, PipelineStack)
    return Synthesized(report, templates, pipeline)


def test_the_app_holds_the_stack_and_the_pipeline_with_its_stages(synthesized: Synthesized):
    names = sorted(synthesized.templates)
    assert len(names) == 4
    assert {f"{STACK_NAME}.template.json", f"{PIPELINE_STACK_NAME}.template.json"} <= set(names)
    for stage in ("Dev", "Prod"):
        assert sum(name.startswith(f"assembly-{PIPELINE_STACK_NAME}-{stage}/") for name in names) == 1


def test_both_packs_ran_and_left_no_unacknowledged_finding(
    synthesized: Synthesized,
):
    report = synthesized.report
    plugins = {r["pluginName"]: r for r in report["pluginReports"]}
    assert set(plugins) == {nag.AWS_SOLUTIONS, nag.HIPAA}
    for name, plugin in plugins.items():
        assert plugin["conclusion"] == "success", name
        assert plugin["violations"] == [], name  # warnings too


def test_cors_origins_from_context_open_the_preflight_and_label_gateway_errors(synthesized: Synthesized):
    template = synthesized.templates[f"{STACK_NAME}.template.json"]

    def of_type(kind: str) -> list[dict[str, Any]]:
        return [r["Properties"] for r in template["Resources"].values() if r["Type"] == kind]

    options = [m for m in of_type("AWS::ApiGateway::Method") if m["HttpMethod"] == "OPTIONS"]
    assert options and all(m["AuthorizationType"] == "NONE" for m in options)
    preflight = json.dumps(options[0]["Integration"])
    assert all(origin in preflight for origin in CORS_ORIGINS) and "'*'" not in preflight
    responses = {r["ResponseType"]: r for r in of_type("AWS::ApiGateway::GatewayResponse")}
    assert set(responses) == {"DEFAULT_4XX", "DEFAULT_5XX"}
    for response in responses.values():
        assert "gatewayresponse.header.Access-Control-Allow-Origin" in response["ResponseParameters"]
    (api,) = [
        f
        for f in of_type("AWS::Lambda::Function")
        if {"Key": "voxelpipe:function", "Value": "api"} in f.get("Tags", [])
    ]
    assert api["Environment"]["Variables"]["VOXELPIPE_CORS_ALLOWED_ORIGINS"] == ",".join(CORS_ORIGINS)


def test_context_sets_when_derived_data_moves_to_a_colder_class(synthesized: Synthesized):
    template = synthesized.templates[f"{STACK_NAME}.template.json"]
    rules = [
        rule
        for r in template["Resources"].values()
        if r["Type"] == "AWS::S3::Bucket"
        for rule in r["Properties"].get("LifecycleConfiguration", {}).get("Rules", [])
        if rule.get("Prefix") == "derived/"
    ]
    assert [rule["Transitions"] for rule in rules] == [
        [{"StorageClass": "GLACIER_IR", "TransitionInDays": TRANSITION_DAYS}]
    ]


def test_the_dicom_receiver_listens_with_tls_where_context_names_a_certificate(synthesized: Synthesized):
    def of_type(template: dict[str, Any], kind: str) -> list[dict[str, Any]]:
        return [r["Properties"] for r in template["Resources"].values() if r["Type"] == kind]

    (prod,) = [t for name, t in synthesized.templates.items() if "-Prod/" in name]
    (listener,) = of_type(prod, "AWS::ElasticLoadBalancingV2::Listener")
    assert (listener["Protocol"], listener["Port"]) == ("TLS", 11112)
    assert listener["Certificates"] == [{"CertificateArn": DICOM_CERTIFICATE}]
    assert listener["SslPolicy"].startswith("ELBSecurityPolicy-TLS13")
    (balancer,) = of_type(prod, "AWS::ElasticLoadBalancingV2::LoadBalancer")
    assert balancer["Scheme"] == "internet-facing"
    (service,) = of_type(prod, "AWS::ECS::Service")
    assert service["DesiredCount"] == 1
    # The stack without that context: plain DICOM on an internal balancer, and no task without AE titles.
    standalone = synthesized.templates[f"{STACK_NAME}.template.json"]
    (listener,) = of_type(standalone, "AWS::ElasticLoadBalancingV2::Listener")
    assert listener["Protocol"] == "TCP"
    (balancer,) = of_type(standalone, "AWS::ElasticLoadBalancingV2::LoadBalancer")
    assert balancer["Scheme"] == "internal"
    (service,) = of_type(standalone, "AWS::ECS::Service")
    assert service["DesiredCount"] == 0


def test_an_unacknowledged_finding_fails_the_synthesis(tmp_path: Path):
    app = App(outdir=str(tmp_path))
    nag.add_nag_checks(app)
    stack = Stack(app, "Throwaway")
    s3.Bucket(stack, "Plain")  # no access logs, no KMS, no TLS-only policy
    with pytest.raises(Exception, match="ValidationFailed"):
        app.synth()
    report = json.loads((tmp_path / "validation-report.json").read_text())
    found = {v["ruleName"] for r in report["pluginReports"] for v in r["violations"]}
    assert {"AwsSolutions-S1", "HIPAA.Security-S3DefaultEncryptionKMS"} <= found


def test_an_acknowledgment_silences_only_its_own_finding(tmp_path: Path):
    app = App(outdir=str(tmp_path))
    nag.add_nag_checks(app)
    stack = Stack(app, "Throwaway")
    bucket = s3.Bucket(stack, "Plain")
    nag.acknowledge(bucket, nag.Ack("AwsSolutions-S1", "a test of the mechanism"))
    with pytest.raises(Exception, match="ValidationFailed"):
        app.synth()
    report = json.loads((tmp_path / "validation-report.json").read_text())
    found = {v["ruleName"] for r in report["pluginReports"] for v in r["violations"]}
    assert "AwsSolutions-S1" not in found and "HIPAA.Security-S3DefaultEncryptionKMS" in found


def _acknowledgments() -> list[nag.Ack]:
    found: list[nag.Ack] = []
    for value in vars(nag).values():
        if isinstance(value, nag.Ack):
            found.append(value)
        elif isinstance(value, tuple) and value and all(isinstance(item, nag.Ack) for item in value):
            found.extend(value)
    return found


def test_every_acknowledgment_says_why():
    acks = _acknowledgments()
    assert len(acks) > 10
    for ack in acks:
        assert ack.rule.startswith(("AwsSolutions-", "HIPAA.Security-")), ack.rule
        assert len(ack.reason.split()) >= 8, ack.rule
        if ack.rule == "AwsSolutions-IAM4":
            assert ack.applies_to, "an IAM4 acknowledgment names the managed policy it accepts"


def _lint_errors(template: dict[str, Any]) -> list[str]:
    matches = lint(json.dumps(template), config=ManualArgs(regions=["us-east-1"]))
    return [f"{m.rule.id} {m.message}" for m in matches if m.rule.id.startswith("E")]


def test_cfn_lint_finds_no_errors_in_any_template(synthesized: Synthesized):
    for name, template in synthesized.templates.items():
        assert _lint_errors(template) == [], name


def test_cfn_lint_does_report_errors():
    broken = {
        "Resources": {"Queue": {"Type": "AWS::SQS::Queue", "Properties": {"VisibilityTimeout": "soon"}}}
    }
    assert _lint_errors(broken)


def _pipeline_template(synthesized: Synthesized) -> dict[str, Any]:
    return synthesized.templates[f"{PIPELINE_STACK_NAME}.template.json"]


def test_the_pipeline_builds_from_the_connection_tests_and_gates_prod(synthesized: Synthesized):
    template = _pipeline_template(synthesized)
    (pipeline,) = [r for r in template["Resources"].values() if r["Type"] == "AWS::CodePipeline::Pipeline"]
    stages = {stage["Name"]: stage["Actions"] for stage in pipeline["Properties"]["Stages"]}
    order = list(stages)
    assert order[0] == "Source" and order[-2:] == ["Dev", "Prod"]
    (source,) = stages["Source"]
    assert source["ActionTypeId"]["Provider"] == "CodeStarSourceConnection"
    assert source["Configuration"]["ConnectionArn"] == PIPELINE["connectionArn"]
    assert source["Configuration"]["FullRepositoryId"] == PIPELINE["repository"]
    assert source["Configuration"]["BranchName"] == PIPELINE["branch"]
    first_prod = min(stages["Prod"], key=lambda action: action["RunOrder"])
    assert first_prod["ActionTypeId"]["Category"] == "Approval"
    assert all(action["ActionTypeId"]["Category"] != "Approval" for action in stages["Dev"])
    # The synth step runs the tests before it synthesizes.
    buildspecs = [
        json.loads(r["Properties"]["Source"]["BuildSpec"])
        for r in template["Resources"].values()
        if r["Type"] == "AWS::CodeBuild::Project"
        and "make test" in r["Properties"]["Source"].get("BuildSpec", "")
    ]
    (commands,) = [spec["phases"]["build"]["commands"] for spec in buildspecs]
    assert commands.index("make test") < commands.index("npx cdk synth")


def test_each_stage_deploys_where_its_context_says_with_its_own_settings(synthesized: Synthesized):
    pipeline = synthesized.pipeline
    for stage, config in (
        (pipeline.dev, PIPELINE["stages"]["dev"]),
        (pipeline.prod, PIPELINE["stages"]["prod"]),
    ):
        assert (stage.stack.account, stage.stack.region) == (config["account"], config["region"])
        assert stage.stack.gpu.settings.max_workers == config["context"][MAX_WORKERS]


def test_pipeline_settings_are_checked():
    assert PipelineConfig.from_context({"connectionArn": ""}) is None  # no connection: no pipeline
    with pytest.raises(ValueError, match="lacks stages"):
        PipelineConfig.from_context({**PIPELINE, "stages": {}})
    other_region = {"account": "222222222222", "region": "us-east-1"}
    with pytest.raises(ValueError, match="pipeline's region"):
        PipelineConfig.from_context({**PIPELINE, "stages": {**PIPELINE["stages"], "prod": other_region}})


def test_the_security_factories_make_resources_the_packs_accept(tmp_path: Path):
    """What another construct gets from infra/security.py passes both packs without acknowledgment."""
    app = App(outdir=str(tmp_path))
    nag.add_nag_checks(app)
    stack = Stack(app, "Throwaway")
    security = StackSecurity(stack, "Security", log_retention_days=30)
    dead_letters = security.queue(stack, "DeadLetters")
    security.queue(
        stack, "Work", dead_letter_queue=sqs.DeadLetterQueue(max_receive_count=3, queue=dead_letters)
    )
    security.topic(stack, "Alarms")
    security.log_group(stack, "Logs")
    app.synth()  # raises on any finding


def test_every_acknowledgment_in_the_app_names_its_wildcard_and_gives_a_reason(synthesized: Synthesized):
    """As attached (not only as declared): IAM4/IAM5 acknowledgments always name their finding."""
    acknowledged: dict[str, str] = {}
    for construct in synthesized.pipeline.node.root.node.find_all():
        for entry in construct.node.metadata:
            if entry.type == Validations.ACKNOWLEDGED_RULES_METADATA_KEY:
                acknowledged.update(entry.data)
    assert acknowledged
    for rule_id, reason in acknowledged.items():
        if "-IAM4" in rule_id or "-IAM5" in rule_id:
            assert rule_id.endswith("]") and "[" in rule_id, rule_id
        assert len(reason.split()) >= 8, rule_id
    assert "AwsSolutions::AwsSolutions-IAM5[Resource::*]" in acknowledged


def test_settings_refuse_values_aws_would_refuse():
    with pytest.raises(ValueError, match="log retention"):
        retention(10)
    app = App(context={DERIVED_TRANSITION_DAYS: "30"})
    assert StackSettings.from_context(app.node).derived_transition_days == 30
    with pytest.raises(ValueError, match="invalid deployment settings"):
        StackSettings.from_context(App(context={DERIVED_TRANSITION_DAYS: 0}).node)


def _resources(template: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {name: r["Properties"] for name, r in template["Resources"].items() if r["Type"] == kind}


def _dev_template(synthesized: Synthesized) -> dict[str, Any]:
    (dev,) = [t for name, t in synthesized.templates.items() if "-Dev/" in name]
    return dev


def _api_environment(template: dict[str, Any]) -> dict[str, Any]:
    (api,) = [
        f
        for f in _resources(template, "AWS::Lambda::Function").values()
        if {"Key": "voxelpipe:function", "Value": "api"} in f.get("Tags", [])
    ]
    variables: dict[str, Any] = api["Environment"]["Variables"]
    return variables


def test_a_private_api_is_reachable_only_through_its_interface_endpoint(synthesized: Synthesized):
    dev = _dev_template(synthesized)
    endpoints = _resources(dev, "AWS::EC2::VPCEndpoint")
    interface = {
        name: json.dumps(props["ServiceName"]).strip('"]}').rsplit(".", 1)[-1]
        for name, props in endpoints.items()
        if props["VpcEndpointType"] == "Interface"
    }
    assert sorted(interface.values()) == ["execute-api", "s3"]
    assert all(endpoints[name]["PrivateDnsEnabled"] is False for name in interface)
    (execute_api,) = [name for name, service in interface.items() if service == "execute-api"]
    (s3_endpoint,) = [name for name, service in interface.items() if service == "s3"]
    (rest,) = _resources(dev, "AWS::ApiGateway::RestApi").values()
    assert rest["EndpointConfiguration"] == {"Types": ["PRIVATE"], "VpcEndpointIds": [{"Ref": execute_api}]}
    deny, allow = rest["Policy"]["Statement"]
    assert deny["Effect"] == "Deny" and deny["Condition"] == {
        "StringNotEquals": {"aws:SourceVpce": {"Ref": execute_api}}
    }
    assert allow["Effect"] == "Allow" and "Condition" not in allow
    # The endpoints take HTTPS from the VPC and the client network only.
    (group,) = [
        g
        for g in _resources(dev, "AWS::EC2::SecurityGroup").values()
        if "private API" in g["GroupDescription"]
    ]
    assert {(rule["FromPort"], rule["ToPort"]) for rule in group["SecurityGroupIngress"]} == {(443, 443)}
    assert CLIENT_CIDR in [rule["CidrIp"] for rule in group["SecurityGroupIngress"]]
    # Presigned URLs name the S3 endpoint, and the bucket refuses presigned requests any other way.
    endpoint_url = json.dumps(_api_environment(dev)[EnvVar.S3_PUBLIC_ENDPOINT])
    assert "https://bucket.vpce-" in endpoint_url and s3_endpoint in endpoint_url
    presigned = [
        statement
        for policy in _resources(dev, "AWS::S3::BucketPolicy").values()
        for statement in policy["PolicyDocument"]["Statement"]
        if "s3:authType" in json.dumps(statement)
    ]
    (statement,) = presigned
    assert statement["Effect"] == "Deny"
    assert statement["Condition"]["StringNotEquals"] == {"aws:SourceVpce": {"Ref": s3_endpoint}}
    assert statement["Condition"]["StringEquals"] == {"s3:authType": ["REST-QUERY-STRING", "POST"]}
    # No WebSocket API (API Gateway cannot make one private): no live URL for clients.
    assert not _resources(dev, "AWS::ApiGatewayV2::Api")
    assert _api_environment(dev)[EnvVar.LIVE_URL] == ""
    assert any("PrivateUrl" in name for name in dev["Outputs"])


def test_the_default_api_is_public_with_live_progress_and_no_endpoints(synthesized: Synthesized):
    standalone = synthesized.templates[f"{STACK_NAME}.template.json"]
    assert not [
        e
        for e in _resources(standalone, "AWS::EC2::VPCEndpoint").values()
        if e["VpcEndpointType"] == "Interface"
    ]
    (rest,) = _resources(standalone, "AWS::ApiGateway::RestApi").values()
    assert "EndpointConfiguration" not in rest and "Policy" not in rest
    assert _resources(standalone, "AWS::ApiGatewayV2::Api")
    environment = _api_environment(standalone)
    assert environment[EnvVar.S3_PUBLIC_ENDPOINT] == "" and "wss://" in json.dumps(
        environment[EnvVar.LIVE_URL]
    )
    # No identity provider, hosted UI or trigger either.
    assert not _resources(standalone, "AWS::Cognito::UserPoolIdentityProvider")
    assert not _resources(standalone, "AWS::Cognito::UserPoolDomain")
    (pool,) = _resources(standalone, "AWS::Cognito::UserPool").values()
    assert "LambdaConfig" not in pool
    assert [a["Name"] for a in pool["Schema"]] == ["tenant", IDP_GROUPS_ATTRIBUTE_NAME]


def test_identity_providers_from_context_sign_people_in_through_the_hosted_ui(synthesized: Synthesized):
    dev = _dev_template(synthesized)
    providers = {
        p["ProviderName"]: p for p in _resources(dev, "AWS::Cognito::UserPoolIdentityProvider").values()
    }
    assert {name: p["ProviderType"] for name, p in providers.items()} == {"entra": "SAML", "keycloak": "OIDC"}
    for provider in providers.values():
        assert IDP_GROUPS_ATTRIBUTE_NAME in provider["AttributeMapping"]
    # The OIDC client secret is a dynamic reference CloudFormation resolves, never a value.
    secret = providers["keycloak"]["ProviderDetails"]["client_secret"]
    assert secret == f"{{{{resolve:secretsmanager:{OIDC_SECRET_ARN}:SecretString:client_secret::}}}}"
    assert providers["entra"]["ProviderDetails"]["IDPInit"] is False
    (domain,) = _resources(dev, "AWS::Cognito::UserPoolDomain").values()
    assert domain["Domain"] == "hospital-a-voxelpipe"
    (client,) = _resources(dev, "AWS::Cognito::UserPoolClient").values()
    assert client["SupportedIdentityProviders"] == ["COGNITO", "entra", "keycloak"]
    assert client["AllowedOAuthFlows"] == ["code"] and client["CallbackURLs"] == [
        *CALLBACK_URLS,
        CLI_CALLBACK_URL,
    ]
    # Mapped attributes are written through the client; no token it issues may write them itself.
    assert client["WriteAttributes"] == ["email", f"custom:{IDP_GROUPS_ATTRIBUTE_NAME}"]
    assert "aws.cognito.signin.user.admin" not in client["AllowedOAuthScopes"]
    # Federated users' tenant and roles come from the pre-token-generation trigger.
    (pool,) = _resources(dev, "AWS::Cognito::UserPool").values()
    trigger = pool["LambdaConfig"]["PreTokenGeneration"]["Fn::GetAtt"][0]
    environment = dev["Resources"][trigger]["Properties"]["Environment"]["Variables"]
    assert json.loads(environment[EnvVar.FEDERATED_PROVIDERS]) == {
        "entra": {"tenant": "hospital-a", "roles": {"6f1c0000-uploaders": "uploader"}},
        "keycloak": {"tenant": "hospital-b", "roles": {"/voxelpipe/admins": "admin"}},
    }
    groups = {a["Name"]: a for a in pool["Schema"]}[IDP_GROUPS_ATTRIBUTE_NAME]
    assert groups["Mutable"] is True
    for name in ("SamlEntityId", "SamlAcsUrl", "OidcRedirectUri", "HostedUiUrl"):
        assert any(name in output for output in dev["Outputs"]), name
