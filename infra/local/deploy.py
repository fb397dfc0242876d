"""Deploying the synthesized CloudFormation template into moto, resource by resource.

Only what the template says is created; the few intrinsic functions CDK emits are resolved
against the physical names moto hands out. A resource type this module doesn't know fails the
deployment, so the local cloud never silently lacks a piece of the real one.
"""

from __future__ import annotations

import io
import json
import re
import secrets
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import boto3

from voxelpipe.wiring import FUNCTION_TAG

ACCOUNT_ID = "123456789012"  # moto's default account
REGION = "us-east-1"
PARTITION = "aws"

# Types that shape permissions or CloudFormation's own machinery, which moto doesn't enforce:
# deploying them would change nothing the local cloud runs. (The roles' own policies are kept:
# infra/local/iam.py holds every function to them.)
IGNORED_TYPES = frozenset(
    {
        "AWS::S3::BucketPolicy",
        "AWS::SQS::QueuePolicy",
        "AWS::Lambda::Permission",
        "AWS::Lambda::LayerVersion",  # the layers' code is the development environment here
        "AWS::CDK::Metadata",
        # moto's S3 notifications don't honour async-invoke settings; LocalCloud.invocations
        # records every failed invocation instead.
        "AWS::Lambda::EventInvokeConfig",
        # API Gateway and Cognito are not emulated: `voxelpipe serve` runs the same app with
        # uvicorn, and the app verifies local development tokens itself (docs/api.md).
        "AWS::ApiGateway::RestApi",
        "AWS::ApiGateway::Resource",
        "AWS::ApiGateway::Method",
        "AWS::ApiGateway::Deployment",
        "AWS::ApiGateway::Stage",
        "AWS::ApiGateway::Authorizer",
        "AWS::ApiGateway::GatewayResponse",  # the CORS headers on API Gateway's own errors
        # The live-progress WebSocket API likewise: `voxelpipe serve` runs its routes in the API
        # process (a WebSocket at /live) with the same use cases, and answers the Management API's
        # PostToConnection itself (infra/local/live.py); the push function runs here, from the queue.
        "AWS::ApiGatewayV2::Api",
        "AWS::ApiGatewayV2::Route",
        "AWS::ApiGatewayV2::Integration",
        "AWS::ApiGatewayV2::Authorizer",
        "AWS::ApiGatewayV2::Stage",
        "AWS::Cognito::UserPool",
        "AWS::Cognito::UserPoolClient",
        "AWS::Cognito::UserPoolGroup",
        # Machine clients' scopes and the hosted UI: locally, the development issuer stands in
        # (`voxelpipe serve`'s /oauth2 endpoints, infra/local/dev_issuer.py).
        "AWS::Cognito::UserPoolResourceServer",
        "AWS::Cognito::UserPoolDomain",
        # The API's hardening lives in API Gateway, which is not emulated (above): its account-level
        # CloudWatch role, request validator and WAF web ACL have nothing local to protect.
        "AWS::ApiGateway::Account",
        "AWS::ApiGateway::RequestValidator",
        "AWS::WAFv2::WebACL",
        "AWS::WAFv2::WebACLAssociation",
        "AWS::WAFv2::LoggingConfiguration",
        # Handlers log to the local process (Powertools to stdout): nothing reads CloudWatch Logs.
        "AWS::Logs::LogGroup",
        # AWS Backup's daily snapshots of the tables: nothing local restores from them.
        "AWS::Backup::BackupVault",
        "AWS::Backup::BackupPlan",
        "AWS::Backup::BackupSelection",
        # The alarm topic's TLS-only policy: moto doesn't enforce topic policies.
        "AWS::SNS::TopicPolicy",
        # The GPU workers' AWS Batch environment and its VPC: moto can't
        # run Batch jobs on EC2. The local cloud runs the workers as threads instead, started by
        # a local stand-in for the scaler (infra/local/workers.py); the job definition itself is
        # read for the workers' environment (see _job_definition).
        "AWS::Batch::ComputeEnvironment",
        "AWS::Batch::JobQueue",
        "AWS::IAM::InstanceProfile",
        "AWS::EC2::VPC",
        "AWS::EC2::Subnet",
        "AWS::EC2::RouteTable",
        "AWS::EC2::SubnetRouteTableAssociation",
        "AWS::EC2::Route",
        "AWS::EC2::EIP",
        "AWS::EC2::NatGateway",
        "AWS::EC2::InternetGateway",
        "AWS::EC2::VPCGatewayAttachment",
        "AWS::EC2::VPCEndpoint",
        "AWS::EC2::SecurityGroup",
        "AWS::EC2::FlowLog",
        # The DICOM C-STORE receiver's ECS service and its load balancer: `voxelpipe serve
        # --dicom-port` runs the same receiver in process, acting as the task's role; the task
        # definition itself is read for that role and the receiver's environment (_task_definition).
        "AWS::ECS::Cluster",
        "AWS::ECS::Service",
        "AWS::ElasticLoadBalancingV2::LoadBalancer",
        "AWS::ElasticLoadBalancingV2::Listener",
        "AWS::ElasticLoadBalancingV2::TargetGroup",
    }
)
# The local cloud's name for the GPU worker's environment, beside the functions' (spec names).
GPU_WORKER = "gpu_worker"


def _cors_rule(rule: dict[str, Any]) -> Any:
    """A template's CorsRule as PutBucketCors takes it (CloudFormation names two fields otherwise)."""
    names = {"ExposedHeaders": "ExposeHeaders", "MaxAge": "MaxAgeSeconds"}
    return {names.get(field, field): value for field, value in rule.items()}


@dataclass
class Deployment:
    """What the template became in moto: physical ids, attributes and the functions' wiring."""

    physical_ids: dict[str, str] = field(default_factory=dict)
    arns: dict[str, str] = field(default_factory=dict)
    function_specs: dict[str, str] = field(default_factory=dict)  # function name -> FunctionSpec.name
    function_env: dict[str, dict[str, str]] = field(default_factory=dict)  # spec name -> env
    state_machine_arns: list[str] = field(default_factory=list)
    # Fn::GetAtt attributes other than Arn (a queue's QueueName, a bus's Name...).
    attributes: dict[str, dict[str, str]] = field(default_factory=dict)
    # The identity-based policy statements of each role (resolved), and each principal's role:
    # spec name (or GPU_WORKER) -> role logical id.
    role_statements: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    principal_roles: dict[str, str] = field(default_factory=dict)

    def statements_of(self, principal: str) -> list[dict[str, Any]]:
        """The policy statements a function (spec name) or the GPU worker acts under."""
        return self.role_statements.setdefault(self.principal_roles[principal], [])

    def allow(self, principal: str, action: str, resource: str) -> None:
        """One more Allow on a principal's role: for a resource a test makes in place of the stack's."""
        self.statements_of(principal).append({"Effect": "Allow", "Action": action, "Resource": resource})

    def ref(self, logical_id: str) -> str:
        pseudo = {
            "AWS::AccountId": ACCOUNT_ID,
            "AWS::Region": REGION,
            "AWS::Partition": PARTITION,
            "AWS::URLSuffix": "amazonaws.com",
            "AWS::StackName": "Voxelpipe",
        }
        if logical_id in pseudo:
            return pseudo[logical_id]
        return self.physical_ids[logical_id]

    def resolve(self, value: Any) -> Any:
        """Resolve Ref, Fn::GetAtt, Fn::Join and Fn::Sub; anything else is returned as it is."""
        if isinstance(value, list):
            return [self.resolve(item) for item in value]
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            ((key, arg),) = value.items()
            if key == "Ref":
                return self.ref(arg)
            if key == "Fn::GetAtt":
                logical_id, attribute = arg if isinstance(arg, list) else arg.split(".", 1)
                if attribute == "Arn":
                    return self.arns[logical_id]
                if attribute in self.attributes.get(logical_id, {}):
                    return self.attributes[logical_id][attribute]
                # Any attribute of a resource not deployed here names it as its placeholder does.
                if self.arns.get(logical_id, "").startswith("not-deployed:"):
                    return self.arns[logical_id]
                raise NotImplementedError(f"Fn::GetAtt {attribute} of {logical_id}")
            if key == "Fn::Join":
                separator, parts = arg
                return separator.join(str(self.resolve(part)) for part in parts)
            if key == "Fn::Sub":
                return re.sub(r"\$\{([^}]+)\}", lambda m: self.ref(m.group(1)), arg)
            if key.startswith("Fn::"):
                raise NotImplementedError(f"intrinsic {key}")
        return {key: self.resolve(item) for key, item in value.items()}


def _code_placeholder() -> bytes:
    # moto stores a function's code but never runs it: the local cloud calls the handler in process.
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("README", "voxelpipe local cloud: handlers run in process")
    return buffer.getvalue()


def _physical_name(logical_id: str, lowercase: bool = False) -> str:
    name = f"voxelpipe-{logical_id}"
    return name.lower() if lowercase else name


def _tags(properties: dict[str, Any]) -> dict[str, str]:
    return {tag["Key"]: tag["Value"] for tag in properties.get("Tags", [])}


class _Deployer:
    def __init__(self, template: dict[str, Any]) -> None:
        self.resources: dict[str, dict[str, Any]] = template["Resources"]
        self.out = Deployment()
        self.s3 = boto3.client("s3", region_name=REGION)
        self.sqs = boto3.client("sqs", region_name=REGION)
        self.dynamodb = boto3.client("dynamodb", region_name=REGION)
        self.iam = boto3.client("iam", region_name=REGION)
        self.lambda_ = boto3.client("lambda", region_name=REGION)
        self.sfn = boto3.client("stepfunctions", region_name=REGION)
        self.kms = boto3.client("kms", region_name=REGION)
        self.events = boto3.client("events", region_name=REGION)
        self.secrets = boto3.client("secretsmanager", region_name=REGION)
        self.sns = boto3.client("sns", region_name=REGION)
        self.cloudwatch = boto3.client("cloudwatch", region_name=REGION)

    def deploy(self) -> Deployment:
        handlers: dict[str, Callable[[str, dict[str, Any]], None]] = {
            "AWS::KMS::Key": self._key,
            "AWS::S3::Bucket": self._bucket,
            "AWS::DynamoDB::Table": self._table,
            "AWS::SQS::Queue": self._queue,
            "AWS::IAM::Role": self._role,
            "AWS::IAM::Policy": self._policy,
            # CDK moves a role's statements past IAM's inline size limit into managed policies.
            "AWS::IAM::ManagedPolicy": self._policy,
            "AWS::Lambda::Function": self._function,
            "AWS::StepFunctions::StateMachine": self._state_machine,
            "AWS::Lambda::EventSourceMapping": self._event_source_mapping,
            "Custom::S3BucketNotifications": self._bucket_notifications,
            "AWS::Events::EventBus": self._event_bus,
            "AWS::Events::Rule": self._rule,
            "AWS::SecretsManager::Secret": self._secret,
            "AWS::SNS::Topic": self._topic,
            "AWS::SNS::Subscription": self._subscription,
            "AWS::CloudWatch::Alarm": self._alarm,
            "AWS::CloudWatch::Dashboard": self._dashboard,
            "AWS::Batch::JobDefinition": self._job_definition,
            "AWS::ECS::TaskDefinition": self._task_definition,
        }
        unknown = sorted({r["Type"] for r in self.resources.values()} - set(handlers) - IGNORED_TYPES)
        if unknown:
            raise NotImplementedError(f"the local cloud cannot deploy {', '.join(unknown)}")
        for logical_id in _dependency_order(self.resources):
            resource = self.resources[logical_id]
            if resource["Type"] in IGNORED_TYPES:
                self.out.physical_ids[logical_id] = self.out.arns[logical_id] = f"not-deployed:{logical_id}"
                continue
            handlers[resource["Type"]](logical_id, resource.get("Properties", {}))
        return self.out

    def _key(self, logical_id: str, props: dict[str, Any]) -> None:
        # A real key in moto, so that SSE-KMS buckets, queues and tables run locally as in AWS.
        key = self.kms.create_key(Description=props.get("Description", logical_id))["KeyMetadata"]
        if props.get("EnableKeyRotation"):
            self.kms.enable_key_rotation(KeyId=key["KeyId"])
        self.out.physical_ids[logical_id] = key["KeyId"]
        self.out.arns[logical_id] = key["Arn"]

    def _bucket(self, logical_id: str, props: dict[str, Any]) -> None:
        name = _physical_name(logical_id, lowercase=True)
        self.s3.create_bucket(Bucket=name)
        if props.get("VersioningConfiguration", {}).get("Status") == "Enabled":
            self.s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
        # Default encryption as the template sets it (SSE-KMS with the stack's key, or SSE-S3).
        # Server access logging and lifecycle rules are not applied: moto neither delivers
        # access logs nor expires objects.
        encryption = self.out.resolve(props.get("BucketEncryption", {}))
        rules: Any = [
            {
                "ApplyServerSideEncryptionByDefault": rule["ServerSideEncryptionByDefault"],
                "BucketKeyEnabled": rule.get("BucketKeyEnabled", False),
            }
            for rule in encryption.get("ServerSideEncryptionConfiguration", [])
        ]
        if rules:
            self.s3.put_bucket_encryption(Bucket=name, ServerSideEncryptionConfiguration={"Rules": rules})
        cors = [_cors_rule(rule) for rule in props.get("CorsConfiguration", {}).get("CorsRules", [])]
        if cors:  # the S3 gateway answers CORS from it (infra/local/s3_cors.py)
            self.s3.put_bucket_cors(Bucket=name, CORSConfiguration={"CORSRules": cors})
        self.out.physical_ids[logical_id] = name
        self.out.arns[logical_id] = f"arn:aws:s3:::{name}"

    def _table(self, logical_id: str, props: dict[str, Any]) -> None:
        name = _physical_name(logical_id)
        kwargs: dict[str, Any] = {
            "TableName": name,
            "KeySchema": props["KeySchema"],
            "AttributeDefinitions": props["AttributeDefinitions"],
            "BillingMode": props.get("BillingMode", "PAY_PER_REQUEST"),
        }
        if props.get("GlobalSecondaryIndexes"):
            kwargs["GlobalSecondaryIndexes"] = props["GlobalSecondaryIndexes"]
        sse = props.get("SSESpecification")
        if sse:  # encrypted with the stack's key (made in moto by _key)
            kwargs["SSESpecification"] = {
                "Enabled": sse.get("SSEEnabled", False),
                **{key: self.out.resolve(sse[key]) for key in ("SSEType", "KMSMasterKeyId") if key in sse},
            }
        description = self.dynamodb.create_table(**kwargs)["TableDescription"]
        ttl = props.get("TimeToLiveSpecification")
        if ttl:
            self.dynamodb.update_time_to_live(TableName=name, TimeToLiveSpecification=ttl)
        self.out.physical_ids[logical_id] = name
        self.out.arns[logical_id] = description["TableArn"]

    def _queue(self, logical_id: str, props: dict[str, Any]) -> None:
        attributes: Any = {
            key: json.dumps(value) if isinstance(value, dict) else str(value)
            for key, value in self.out.resolve(props).items()
            if key
            in {
                "VisibilityTimeout",
                "MessageRetentionPeriod",
                "RedrivePolicy",
                "DelaySeconds",
                "KmsMasterKeyId",
                "KmsDataKeyReusePeriodSeconds",
            }
        }
        url = self.sqs.create_queue(QueueName=_physical_name(logical_id), Attributes=attributes)["QueueUrl"]
        arn = self.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]
        self.out.physical_ids[logical_id] = url
        self.out.arns[logical_id] = arn
        self.out.attributes[logical_id] = {"QueueName": _physical_name(logical_id), "QueueUrl": url}

    def _role(self, logical_id: str, props: dict[str, Any]) -> None:
        name = _physical_name(logical_id)[:64]
        role = self.iam.create_role(
            RoleName=name, AssumeRolePolicyDocument=json.dumps(props["AssumeRolePolicyDocument"])
        )["Role"]
        self.out.physical_ids[logical_id] = name
        self.out.arns[logical_id] = role["Arn"]

    def _policy(self, logical_id: str, props: dict[str, Any]) -> None:
        statements = self.out.resolve(props["PolicyDocument"])["Statement"]
        for role in props.get("Roles", []):
            self.out.role_statements.setdefault(role["Ref"], []).extend(statements)
        self.out.physical_ids[logical_id] = self.out.arns[logical_id] = f"policy:{logical_id}"

    def _function(self, logical_id: str, props: dict[str, Any]) -> None:
        spec_name = _tags(props).get(FUNCTION_TAG)
        if spec_name is None:
            # CDK's own helpers (the bucket-notifications custom resource): their effect is
            # deployed directly (see _bucket_notifications).
            return
        name = _physical_name(logical_id)[:64]
        env = {
            k: str(v) for k, v in self.out.resolve(props.get("Environment", {}).get("Variables", {})).items()
        }
        package: dict[str, Any] = (
            {"PackageType": "Image", "Code": {"ImageUri": self.out.resolve(props["Code"]["ImageUri"])}}
            if props.get("PackageType") == "Image"
            else {
                "Runtime": props["Runtime"],
                "Handler": props["Handler"],
                "Code": {"ZipFile": _code_placeholder()},
            }
        )
        created = self.lambda_.create_function(
            FunctionName=name,
            Role=self.out.resolve(props["Role"]),
            **package,
            Timeout=props.get("Timeout", 3),
            MemorySize=props.get("MemorySize", 128),
            Environment={"Variables": env},
            Tags=_tags(props),
        )
        self.out.physical_ids[logical_id] = name
        self.out.arns[logical_id] = created["FunctionArn"]
        self.out.function_specs[name] = spec_name
        self.out.function_env[spec_name] = env
        self.out.principal_roles[spec_name] = props["Role"]["Fn::GetAtt"][0]

    def _state_machine(self, logical_id: str, props: dict[str, Any]) -> None:
        definition = self.out.resolve(props["DefinitionString"])
        arn = self.sfn.create_state_machine(
            name=_physical_name(logical_id),
            definition=definition,
            roleArn=self.out.resolve(props["RoleArn"]),
            type=props.get("StateMachineType", "STANDARD"),
        )["stateMachineArn"]
        self.out.physical_ids[logical_id] = arn
        self.out.arns[logical_id] = arn
        self.out.attributes[logical_id] = {"Name": _physical_name(logical_id)}
        self.out.state_machine_arns.append(arn)

    def _event_source_mapping(self, logical_id: str, props: dict[str, Any]) -> None:
        self.lambda_.create_event_source_mapping(
            EventSourceArn=self.out.resolve(props["EventSourceArn"]),
            FunctionName=self.out.resolve(props["FunctionName"]),
            BatchSize=props.get("BatchSize", 10),
            FunctionResponseTypes=props.get("FunctionResponseTypes", []),
        )

    def _job_definition(self, logical_id: str, props: dict[str, Any]) -> None:
        """Nothing to create (no Batch here): the GPU worker's environment is kept for the local
        workers, which thus run with the settings the job definition gives them in AWS."""
        variables = props.get("ContainerProperties", {}).get("Environment", [])
        self.out.function_env[GPU_WORKER] = {
            item["Name"]: str(self.out.resolve(item["Value"])) for item in variables
        }
        self.out.principal_roles[GPU_WORKER] = props["ContainerProperties"]["JobRoleArn"]["Fn::GetAtt"][0]
        self.out.physical_ids[logical_id] = self.out.arns[logical_id] = f"local:{logical_id}"

    def _task_definition(self, logical_id: str, props: dict[str, Any]) -> None:
        """Nothing to run (no ECS here): a service's environment and task role are kept under its
        spec's name (the FUNCTION_TAG), for whoever runs it locally as that role."""
        spec_name = _tags(props).get(FUNCTION_TAG)
        if spec_name is None:
            raise NotImplementedError(f"{logical_id}: a task definition without the {FUNCTION_TAG} tag")
        (container,) = props["ContainerDefinitions"]
        self.out.function_env[spec_name] = {
            item["Name"]: str(self.out.resolve(item["Value"])) for item in container.get("Environment", [])
        }
        self.out.principal_roles[spec_name] = props["TaskRoleArn"]["Fn::GetAtt"][0]
        self.out.physical_ids[logical_id] = self.out.arns[logical_id] = f"local:{logical_id}"

    def _bucket_notifications(self, logical_id: str, props: dict[str, Any]) -> None:
        configuration = self.out.resolve(props["NotificationConfiguration"])
        self.s3.put_bucket_notification_configuration(
            Bucket=self.out.resolve(props["BucketName"]), NotificationConfiguration=configuration
        )

    # -- events, secrets, alarms: created so that the local cloud runs them as AWS would --------
    def _event_bus(self, logical_id: str, props: dict[str, Any]) -> None:
        name = _physical_name(logical_id)
        arn = self.events.create_event_bus(Name=name)["EventBusArn"]
        self.out.physical_ids[logical_id] = name
        self.out.arns[logical_id] = arn
        self.out.attributes[logical_id] = {"Name": name}

    def _rule(self, logical_id: str, props: dict[str, Any]) -> None:
        """A rule and its targets; moto delivers matching events to SQS targets. A schedule never
        fires in moto: the reaper is invoked directly (`voxelpipe admin reap`, the tests)."""
        name = _physical_name(logical_id)[:64]
        bus = self.out.resolve(props.get("EventBusName", "default"))
        kwargs: dict[str, Any] = {"Name": name, "EventBusName": bus, "State": props.get("State", "ENABLED")}
        if "EventPattern" in props:
            kwargs["EventPattern"] = json.dumps(self.out.resolve(props["EventPattern"]))
        if "ScheduleExpression" in props:
            kwargs["ScheduleExpression"] = props["ScheduleExpression"]
        arn = self.events.put_rule(**kwargs)["RuleArn"]
        self.events.put_targets(
            Rule=name,
            EventBusName=bus,
            Targets=[{"Id": t["Id"], "Arn": self.out.resolve(t["Arn"])} for t in props.get("Targets", [])],
        )
        self.out.physical_ids[logical_id] = name
        self.out.arns[logical_id] = arn

    def _secret(self, logical_id: str, props: dict[str, Any]) -> None:
        generator = props.get("GenerateSecretString", {})
        value = secrets.token_hex(max(16, int(generator.get("PasswordLength", 64)) // 2))
        arn = self.secrets.create_secret(Name=_physical_name(logical_id), SecretString=value)["ARN"]
        self.out.physical_ids[logical_id] = self.out.arns[logical_id] = arn

    def _topic(self, logical_id: str, props: dict[str, Any]) -> None:
        name = _physical_name(logical_id)[:256]
        arn = self.sns.create_topic(Name=name)["TopicArn"]
        self.out.physical_ids[logical_id] = self.out.arns[logical_id] = arn
        self.out.attributes[logical_id] = {"TopicName": name}

    def _subscription(self, logical_id: str, props: dict[str, Any]) -> None:
        arn = self.sns.subscribe(
            TopicArn=self.out.resolve(props["TopicArn"]),
            Protocol=props["Protocol"],
            Endpoint=self.out.resolve(props["Endpoint"]),
        )["SubscriptionArn"]
        self.out.physical_ids[logical_id] = self.out.arns[logical_id] = arn

    def _alarm(self, logical_id: str, props: dict[str, Any]) -> None:
        resolved = self.out.resolve(props)
        name = resolved.pop("AlarmName", _physical_name(logical_id))
        self.cloudwatch.put_metric_alarm(AlarmName=name, **resolved)
        self.out.physical_ids[logical_id] = name
        self.out.arns[logical_id] = f"arn:{PARTITION}:cloudwatch:{REGION}:{ACCOUNT_ID}:alarm:{name}"

    def _dashboard(self, logical_id: str, props: dict[str, Any]) -> None:
        name = props.get("DashboardName", _physical_name(logical_id))
        self.cloudwatch.put_dashboard(
            DashboardName=name, DashboardBody=self.out.resolve(props["DashboardBody"])
        )
        self.out.physical_ids[logical_id] = name
        self.out.arns[logical_id] = f"arn:{PARTITION}:cloudwatch::{ACCOUNT_ID}:dashboard/{name}"


def _references(value: Any) -> set[str]:
    """Logical ids that a resource's properties refer to."""
    if isinstance(value, list):
        return set().union(*(_references(item) for item in value)) if value else set()
    if not isinstance(value, dict):
        return set()
    found: set[str] = set()
    for key, arg in value.items():
        if key == "Ref" and isinstance(arg, str) and not arg.startswith("AWS::"):
            found.add(arg)
        elif key == "Fn::GetAtt":
            found.add(arg[0] if isinstance(arg, list) else arg.split(".", 1)[0])
        else:
            found |= _references(arg)
    return found


def _dependency_order(resources: dict[str, dict[str, Any]]) -> list[str]:
    """Logical ids, each after every resource it refers to or depends on (as CloudFormation does)."""
    ordered: list[str] = []
    visiting: set[str] = set()

    def visit(logical_id: str) -> None:
        if logical_id in ordered:
            return
        if logical_id in visiting:
            raise ValueError(f"circular reference at {logical_id}")
        visiting.add(logical_id)
        resource = resources[logical_id]
        depends_on = resource.get("DependsOn", [])
        for dependency in sorted(
            _references(resource.get("Properties", {}))
            | set([depends_on] if isinstance(depends_on, str) else depends_on)
        ):
            if dependency in resources:
                visit(dependency)
        visiting.discard(logical_id)
        ordered.append(logical_id)

    for logical_id in resources:
        visit(logical_id)
    return ordered


def deploy_template(template: dict[str, Any]) -> Deployment:
    return _Deployer(template).deploy()
