"""cdk-nag: the rule packs that check every synthesis, and every acknowledged finding with its reason.

The AwsSolutions and HIPAA Security packs run as validation plugins: an unacknowledged finding
fails `app.synth()`. Each acknowledgment below says why the finding is accepted; call sites
attach them to the narrowest construct (`acknowledge(construct, ACK, applies_to=...)`), and
IAM5 wildcard findings name the exact wildcard they accept.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from aws_cdk import Acknowledgment, Stack, Stage, Token, Validations
from cdk_nag import AwsSolutionsChecks, HIPAASecurityChecks
from constructs import IConstruct

AWS_SOLUTIONS = "AwsSolutions"
HIPAA = "HIPAA.Security"


def add_nag_checks(stage: Stage) -> None:
    """Run both packs on `stage` (the app): any finding not acknowledged fails its synthesis."""
    Validations.of(stage).add_plugins(AwsSolutionsChecks(stage), HIPAASecurityChecks(stage))


@dataclass(frozen=True)
class Ack:
    """An accepted finding of one rule, and why it is accepted."""

    rule: str  # e.g. "AwsSolutions-IAM5", "HIPAA.Security-LambdaInsideVPC"
    reason: str
    # The findings it accepts, for rules that report several per resource (IAM4, IAM5):
    # e.g. "Resource::*", "Policy::arn:<AWS::Partition>:iam::aws:policy/...".
    applies_to: tuple[str, ...] = ()

    @property
    def pack(self) -> str:
        return HIPAA if self.rule.startswith(HIPAA) else AWS_SOLUTIONS

    def ids(self, applies_to: Sequence[str] = ()) -> list[str]:
        applies_to = applies_to or self.applies_to
        if not applies_to:
            return [f"{self.pack}::{self.rule}"]
        return [f"{self.pack}::{self.rule}[{finding}]" for finding in applies_to]


def acknowledge(scope: IConstruct, *acks: Ack, applies_to: Sequence[str] = ()) -> None:
    """Accept `acks` on `scope` and everything in it; `applies_to` (else each ack's own) narrows."""
    Validations.of(scope).acknowledge(
        *(Acknowledgment(id=ack_id, reason=ack.reason) for ack in acks for ack_id in ack.ids(applies_to))
    )


def managed_policy(name: str) -> str:
    """The IAM4 finding for an AWS managed policy (`service-role/AWSBackupServiceRolePolicyForBackup`)."""
    return f"Policy::arn:<AWS::Partition>:iam::aws:policy/{name}"


def region_of(stack: Stack) -> str:
    """The stack's region as cdk-nag writes it in a finding: literal, or `<AWS::Region>`."""
    return "<AWS::Region>" if Token.is_unresolved(stack.region) else stack.region


def account_of(stack: Stack) -> str:
    return "<AWS::AccountId>" if Token.is_unresolved(stack.account) else stack.account


def wildcard_resource(arn: str) -> str:
    """The IAM5 finding for a wildcard resource, in cdk-nag's notation (`<LogicalId.Arn>/uploads/*`)."""
    return f"Resource::{arn}"


# ---- Acknowledgments, with their reasons ------------------------------------------------------

# Every function (the factory in stack.py acknowledges these on each).
FUNCTION = (
    Ack(
        "AwsSolutions-L1",
        "Pinned to python3.12 on purpose: the layers are built for it (infra/layers.py: wheels, bytecode) "
        "and the container images use the same runtime; moving to a newer one is a tested change of its own.",
    ),
    Ack(
        "HIPAA.Security-LambdaConcurrency",
        "No reserved concurrency: it would carve the account's pool (new accounts have 10) and cap "
        "throughput; load is bounded upstream instead (API Gateway throttling and WAF rate limit, the "
        "queues' consumer batch size, the state machine's analysis concurrency).",
    ),
    Ack(
        "HIPAA.Security-LambdaDLQ",
        "No function needs a dead-letter queue of its own: the API and the workflow steps are invoked "
        "synchronously (errors go back to API Gateway or to the state machine's Retry/Catch), dispatch "
        "reads SQS queues that have their own DLQs, and ingest's failed asynchronous events go to the "
        "IngestFailures on-failure destination, which keeps the whole event.",
    ),
    Ack(
        "HIPAA.Security-LambdaInsideVPC",
        "The functions reach only AWS service APIs (S3, SQS, DynamoDB, Step Functions) over TLS with IAM "
        "authorisation and hold no network-reachable resource; a VPC would add NAT or endpoint cost "
        "without narrowing who can reach the data.",
    ),
)
# Every function's role (made by StackSecurity.function_role).
FUNCTION_ROLE = (
    Ack(
        "AwsSolutions-IAM5",
        "X-Ray's PutTraceSegments/PutTelemetryRecords and ECR's GetAuthorizationToken (image functions) "
        "support no resource-level permissions: AWS requires Resource '*'.",
        ("Resource::*",),
    ),
    Ack(
        "HIPAA.Security-IAMNoInlinePolicy",
        "Each role's policy is generated from that one function's grants (infra/access.py) and is attached "
        "to that role only, created and deleted with it; a managed policy would add a second, shareable "
        "copy of the same statements.",
    ),
)
PREFIX_WILDCARD = Ack(
    "AwsSolutions-IAM5",
    "Object actions are granted on one key prefix of the bucket (uploads/, quarantine/, derived/ or "
    "work/): the wildcard stands for the object keys under that prefix, which are made per study.",
)
EXECUTION_WILDCARD = Ack(
    "AwsSolutions-IAM5",
    "Describe/StopExecution on the executions of the one study state machine: execution names are "
    "made per study attempt, so they can only be named by the machine's prefix.",
)
FAILURE_DESTINATION_QUEUE = Ack(
    "AwsSolutions-SQS3",
    "IngestFailures is itself a dead-letter store: the on-failure destination of ingest's asynchronous "
    "invocations; nothing consumes it automatically (a redrive is an operator's act).",
)
ACCESS_LOGS_BUCKET = (
    Ack(
        "AwsSolutions-S1",
        "This is the server access logs bucket: logging it to itself would log its own log deliveries.",
    ),
    Ack(
        "HIPAA.Security-S3BucketLoggingEnabled",
        "This is the server access logs bucket: logging it to itself would log its own log deliveries.",
    ),
    Ack(
        "HIPAA.Security-S3DefaultEncryptionKMS",
        "S3 delivers server access logs only to buckets encrypted with SSE-S3; the logs hold request "
        "metadata (keys are opaque study ids), not image data.",
    ),
    Ack(
        "HIPAA.Security-S3BucketReplicationEnabled",
        "Access logs are kept in-region, versioned, for a year; replicating them is the deployer's call.",
    ),
)
INGEST_BUCKET = Ack(
    "HIPAA.Security-S3BucketReplicationEnabled",
    "Replicating patient data to a second region is a data-residency decision for each deployment; the "
    "bucket is versioned with RETAIN, so a replication rule can be added without replacing it.",
)
BACKUP_SERVICE_ROLE_POLICY = Ack(
    "AwsSolutions-IAM4",
    "AWS Backup's selection role uses the AWS-maintained AWSBackupServiceRolePolicyForBackup (and "
    "...ForRestores), which follow the service's needs as it changes.",
    (managed_policy("service-role/AWSBackupServiceRolePolicyForBackup"),),
)
USER_POOL = (
    Ack(
        "AwsSolutions-COG2",
        "MFA is optional so that the CLI password flow works for every user; an administrator can require "
        "it per user (docs/deploy.md). Tokens are short-lived and every call is tenant-scoped.",
    ),
    Ack(
        "AwsSolutions-COG8",
        "The Plus feature plan (threat protection) is billed per active user; it is the deployer's choice "
        "and can be switched on without replacing the pool.",
    ),
    Ack(
        "AwsSolutions-COG3",
        "Advanced security (threat protection) needs the Plus feature plan: see AwsSolutions-COG8.",
    ),
)
REST_API = (
    Ack(
        "AwsSolutions-IAM4",
        "API Gateway's account-level CloudWatch role uses the AWS-maintained "
        "AmazonAPIGatewayPushToCloudWatchLogs policy, the one the service documents for execution logs.",
        (managed_policy("service-role/AmazonAPIGatewayPushToCloudWatchLogs"),),
    ),
    Ack(
        "HIPAA.Security-APIGWCacheEnabledAndEncrypted",
        "No response cache: responses are per user and tenant and carry short-lived presigned URLs, which "
        "must never be served from a cache.",
    ),
    Ack(
        "HIPAA.Security-APIGWSSLEnabled",
        "The backend is a Lambda proxy integration, not an HTTP endpoint, so there is no backend to present "
        "a client certificate to; clients reach the API over TLS only.",
    ),
)
LIVE_MANAGE_CONNECTIONS = Ack(
    "AwsSolutions-IAM5",
    "Posting to a live-progress connection needs execute-api:ManageConnections on "
    "{api}/{stage}/*/@connections/*: connection ids are made by API Gateway at each connect, so they "
    "cannot be named in advance; the grant is limited to the one stage's connections.",
)
LIVE_ROUTES = (
    Ack(
        "AwsSolutions-APIG4",
        "Only $connect can carry an authorizer on a WebSocket API; $disconnect and $default run on a "
        "connection that $connect's Lambda authorizer (a Cognito ID token or a viewer grant) admitted.",
    ),
)
CORS_PREFLIGHT = tuple(
    Ack(
        rule,
        "A CORS preflight (OPTIONS) cannot carry credentials: browsers send it without them. API Gateway "
        "answers it itself (a mock integration, no backend) for the configured origins only.",
    )
    for rule in ("AwsSolutions-APIG4", "AwsSolutions-COG4")
)
PUBLIC_METHOD = (
    Ack(
        "AwsSolutions-APIG4",
        "/health, /docs and /openapi.json are public on purpose: health checks and the API's own "
        "documentation; they read no data.",
    ),
    Ack(
        "AwsSolutions-COG4",
        "/health, /docs and /openapi.json are public on purpose: health checks and the API's own "
        "documentation; they read no data.",
    ),
)
_VIEWER_REASON = (
    "/viewer/{proxy+} skips the Cognito authorizer on purpose (docs/viewer.md): its pages, script "
    "and NiiVue carry no data, and its data routes (/viewer/api/...) are refused by the app without "
    "a viewer grant: a short-lived signed token, scoped to one study or subject of one tenant, that "
    "only a signed-in user's POST .../viewer-link issues."
)
VIEWER_METHOD = (Ack("AwsSolutions-APIG4", _VIEWER_REASON), Ack("AwsSolutions-COG4", _VIEWER_REASON))
STATE_MACHINE_ROLE = (
    Ack(
        "AwsSolutions-IAM5",
        "Step Functions invokes each step's function by ARN and by qualified ARN (`:*`, its versions), "
        "and its CloudWatch Logs delivery and X-Ray actions support no resource-level permissions "
        "(Resource '*').",
    ),
    FUNCTION_ROLE[1],
)
BUCKET_NOTIFICATIONS_HANDLER = (
    Ack(
        "AwsSolutions-IAM4",
        "CDK's own bucket-notifications custom resource (runs at deploy time only) uses the AWS-managed "
        "AWSLambdaBasicExecutionRole for its logs.",
        (managed_policy("service-role/AWSLambdaBasicExecutionRole"),),
    ),
    Ack(
        "HIPAA.Security-IAMNoInlinePolicy",
        "CDK's bucket-notifications custom resource: its one policy allows s3:PutBucketNotification, made "
        "and deleted with it.",
    ),
)

# The deploy pipeline (infra/pipeline.py).
# The root that every study's webhook signing key is derived from (voxelpipe.webhooks): receivers
# were handed keys derived from it, so a scheduled rotation would silently break every receiver.
WEBHOOK_SECRET = tuple(
    Ack(
        rule,
        "Root of the per-study webhook signing keys handed to receivers at study creation: rotating it "
        "invalidates every receiver's key, so operators rotate it deliberately (docs/operations.md)",
    )
    for rule in ("AwsSolutions-SMG4", "HIPAA.Security-SecretsManagerRotationEnabled")
)
# The pseudonym secret (voxelpipe.pseudonyms): every subject's date offset and derived subject_ref
# come from it, so rotating it would move every subject's dates and split every subject in two.
PSEUDONYM_SECRET = tuple(
    Ack(
        rule,
        "Root of the subjects' pseudonyms and date offsets: rotating it would shift each subject's later "
        "dates by another offset and give its later exams another subject_ref, breaking every timeline "
        "(docs/subjects.md), so it is never rotated",
    )
    for rule in ("AwsSolutions-SMG4", "HIPAA.Security-SecretsManagerRotationEnabled")
)
# The GPU workers (infra/gpu.py).
GPU_TASK_TOKENS = Ack(
    "AwsSolutions-IAM5",
    "The state machine sends GPU tasks to the GPU queue, encrypted with the stack's key: SQS needs "
    "kms:GenerateDataKey* (its variants with and without plaintext) on that one key.",
    ("Action::kms:GenerateDataKey*",),
)
GPU_ROLES = Ack(
    "HIPAA.Security-IAMNoInlinePolicy",
    "The GPU worker's job, execution and flow-log roles each get one policy generated from their grants "
    "(infra/access.py), attached to that role only and created and deleted with it.",
)
GPU_EXECUTION_ROLE = Ack(
    "AwsSolutions-IAM5",
    "ECS pulls the worker image with ecr:GetAuthorizationToken (no resource-level permissions) and "
    "writes the job's logs under /aws/batch/job, whose streams are named per job.",
)
GPU_INSTANCE_ROLE = Ack(
    "AwsSolutions-IAM4",
    "Batch's GPU instances register with ECS through the AWS-managed AmazonEC2ContainerServiceforEC2Role, "
    "which AWS maintains for the ECS agent's changing needs; jobs use their own job role.",
    (managed_policy("service-role/AmazonEC2ContainerServiceforEC2Role"),),
)
GPU_PUBLIC_SUBNETS = tuple(
    Ack(
        rule,
        "The public subnets hold only the NAT gateway that gives the private worker subnets egress to "
        "AWS APIs and ECR; no worker runs there and workers get no public address.",
    )
    for rule in (
        "HIPAA.Security-VPCSubnetAutoAssignPublicIpDisabled",
        "HIPAA.Security-VPCNoUnrestrictedRouteToIGW",
    )
)
GPU_DEFAULT_SECURITY_GROUP = Ack(
    "HIPAA.Security-VPCDefaultSecurityGroupClosed",
    "Nothing uses the VPC's default security group: the Batch instances have their own, with no "
    "inbound rule. Closing it needs a custom resource Lambda that would itself need a VPC exception.",
)
# The GPU scaler lists the job queue's jobs: batch:ListJobs has no resource-level permissions.
LIST_JOBS = Ack(
    "AwsSolutions-IAM5",
    "batch:ListJobs supports no resource-level permissions; the scaler may only list, and submits "
    "only to the named job queue and job definition",
)
ARTIFACT_BUCKET = Ack(
    "HIPAA.Security-S3BucketReplicationEnabled",
    "Pipeline artifacts are rebuilt from the repository on every run and expire after 30 days; "
    "replicating them to another region would protect nothing that cannot be rebuilt.",
)
PIPELINE_GENERATED_ROLES = (
    Ack(
        "AwsSolutions-IAM5",
        "CDK Pipelines' own roles (pipeline, source, synth, self-mutation, asset publishing): their "
        "grants on the artifact bucket and key use CDK's action groups (s3:GetObject*, kms:GenerateDataKey* "
        "...) on that one bucket and key; CodeBuild log groups and report groups are named per project "
        "with a run suffix; self-mutation assumes the CDK bootstrap roles (role/cdk-*) of the target "
        "accounts; CodeBuild's ECR login and X-Ray support no resource-level permissions.",
    ),
    Ack(
        "HIPAA.Security-IAMNoInlinePolicy",
        "CDK Pipelines generates one policy per role of its own, created and deleted with that role.",
    ),
)
PIPELINE_PROJECTS = Ack(
    "HIPAA.Security-CodeBuildProjectSourceRepoUrl",
    "The projects take their source from CodePipeline artifacts, fetched through the CodeConnections "
    "connection: no repository URL, and so no credentials in one, is configured on any project.",
)
# The DICOM C-STORE receiver (infra/dicom_receiver.py).
RECEIVER_ENVIRONMENT = Ack(
    "AwsSolutions-ECS2",
    "The receiver's environment holds resource names, its AE title map and its limits: no secret. "
    "The names come from the stack as every function's do (voxelpipe.wiring).",
)
RECEIVER_ROLES = Ack(
    "HIPAA.Security-IAMNoInlinePolicy",
    "The receiver's task and execution roles each get one policy generated from their grants "
    "(infra/access.py), attached to that role only and created and deleted with it.",
)
RECEIVER_EXECUTION_ROLE = Ack(
    "AwsSolutions-IAM5",
    "ECS pulls the receiver's image with ecr:GetAuthorizationToken, which supports no resource-level "
    "permissions.",
)
RECEIVER_DELETION_PROTECTION = Ack(
    "HIPAA.Security-ELBDeletionProtectionEnabled",
    "The load balancer holds no data and is rebuilt by the stack in minutes; deletion protection "
    "would only block removing the stack. Instances it carried are in the bucket and tables.",
)
RECEIVER_INGRESS = tuple(
    Ack(
        rule,
        "The receiver's only inbound rule is the DICOM port from the VPC's own range (where the NLB "
        "connects from); the range is a token at synthesis, which the rule cannot read.",
    )
    for rule in (
        "AwsSolutions-EC23",
        "HIPAA.Security-EC2RestrictedCommonPorts",
        "HIPAA.Security-EC2RestrictedSSH",
    )
)
RECEIVER_PLAIN_DICOM = Ack(
    "HIPAA.Security-ELBv2ACMCertificateRequired",
    "Without voxelpipe:dicomTls the listener speaks plain DICOM, which many modalities and PACS only "
    "speak; the load balancer is then internal (an internet-facing one requires TLS at synthesis), "
    "reached from the VPC, a peered network or a VPN. Set voxelpipe:dicomTls for DICOM TLS.",
)

# Deliveries (infra/notifications.py, stack.py): egress reads the destinations' secrets and assumes
# the tenants' delivery roles; the API creates and deletes the destinations' secrets.
DESTINATION_SECRETS = Ack(
    "AwsSolutions-IAM5",
    "Each destination gets its own secret, created at run time by the API when an admin adds the "
    "destination: the grant is on the deployment's destination-secret name prefix only.",
)
DELIVERY_ROLES = Ack(
    "AwsSolutions-IAM5",
    "S3 destinations are buckets in the tenants' accounts, written through a role each tenant creates: "
    "egress may assume only roles named voxelpipe-delivery-* (the destination's role_arn is checked "
    "for that name when saved); the tenant's trust policy decides the rest.",
)
EGRESS_VPC = Ack(
    "AwsSolutions-IAM4",
    "Egress runs in the VPC (C-STORE to PACS reached from it): Lambda needs the AWS-managed "
    "AWSLambdaVPCAccessExecutionRole to create and remove its network interfaces.",
    (managed_policy("service-role/AWSLambdaVPCAccessExecutionRole"),),
)

# The private network mode (infra/private_api.py).
PRIVATE_ENDPOINTS_INGRESS = tuple(
    Ack(
        rule,
        "The private API and S3 endpoints take HTTPS (443) only, from the VPC's own range and the client "
        "networks voxelpipe:network:clientCidrs names (a zero-length prefix is refused at synthesis); the "
        "VPC's range is a token at synthesis, which the rule cannot read.",
    )
    for rule in (
        "AwsSolutions-EC23",
        "HIPAA.Security-EC2RestrictedCommonPorts",
        "HIPAA.Security-EC2RestrictedSSH",
    )
)
