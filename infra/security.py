"""The stack's keys and the helpers that make a resource compliant: use them for every new one.

- `StackSecurity.data_key` encrypts data at rest (S3, SQS, DynamoDB, backups); `logs_key` encrypts
  CloudWatch Logs (its key policy lets the logs service use it, and nothing else outside IAM).
- `StackSecurity.log_group`, `.queue`, `.topic` and `.function_role` build KMS-encrypted log groups
  with retention, KMS-encrypted TLS-only queues and topics (alarms may publish to them), and Lambda
  roles with no managed policy.
- `access_logs_bucket` makes a hardened target for S3 server access logs; `encrypted_bucket` a
  hardened SSE-KMS bucket that logs to one.
- `grant_*` functions grant exactly named actions on named resources (no `s3:Get*`-style action
  wildcards that CDK's own `grant_*` helpers emit), with the KMS actions to match.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import Enum

import jsii
from aws_cdk import Aws, Duration, RemovalPolicy, Stack
from aws_cdk import aws_backup as backup
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from infra import nag
from voxelpipe.wiring import APPEND_ONLY_RESOURCES

# CloudWatch Logs accepts only these retention periods (days).
_RETENTION = {
    1: logs.RetentionDays.ONE_DAY,
    3: logs.RetentionDays.THREE_DAYS,
    5: logs.RetentionDays.FIVE_DAYS,
    7: logs.RetentionDays.ONE_WEEK,
    14: logs.RetentionDays.TWO_WEEKS,
    30: logs.RetentionDays.ONE_MONTH,
    60: logs.RetentionDays.TWO_MONTHS,
    90: logs.RetentionDays.THREE_MONTHS,
    120: logs.RetentionDays.FOUR_MONTHS,
    150: logs.RetentionDays.FIVE_MONTHS,
    180: logs.RetentionDays.SIX_MONTHS,
    365: logs.RetentionDays.ONE_YEAR,
    400: logs.RetentionDays.THIRTEEN_MONTHS,
    545: logs.RetentionDays.EIGHTEEN_MONTHS,
    731: logs.RetentionDays.TWO_YEARS,
    1096: logs.RetentionDays.THREE_YEARS,
    1827: logs.RetentionDays.FIVE_YEARS,
    2192: logs.RetentionDays.SIX_YEARS,
    2557: logs.RetentionDays.SEVEN_YEARS,
    2922: logs.RetentionDays.EIGHT_YEARS,
    3288: logs.RetentionDays.NINE_YEARS,
    3653: logs.RetentionDays.TEN_YEARS,
}

# Server access logs are kept this long; their overwritten versions, a week.
ACCESS_LOG_DAYS = 365
NONCURRENT_LOG_DAYS = 7

# Exactly what each kind of use needs of a KMS key (no `kms:GenerateDataKey*`-style wildcards).
KMS_DECRYPT = ("kms:Decrypt",)
KMS_ENCRYPT_DECRYPT = ("kms:Decrypt", "kms:GenerateDataKey")
DYNAMODB_KMS_WRITE = ("kms:Decrypt", "kms:DescribeKey", "kms:Encrypt", "kms:GenerateDataKey")
DYNAMODB_KMS_READ = ("kms:Decrypt", "kms:DescribeKey")

DYNAMODB_READ = (
    "dynamodb:BatchGetItem",
    "dynamodb:ConditionCheckItem",
    "dynamodb:DescribeTable",
    "dynamodb:GetItem",
    "dynamodb:Query",
    "dynamodb:Scan",
)
DYNAMODB_WRITE = ("dynamodb:BatchWriteItem", "dynamodb:DeleteItem", "dynamodb:PutItem", "dynamodb:UpdateItem")
SQS_SEND = ("sqs:GetQueueAttributes", "sqs:GetQueueUrl", "sqs:SendMessage")
# What no role may do to an append-only table's items (or the table): BatchWriteItem deletes too,
# PartiQL updates and deletes, and the table's own settings (its TTL, its deletion).
APPEND_ONLY_DENIED = (
    "dynamodb:UpdateItem",
    "dynamodb:DeleteItem",
    "dynamodb:BatchWriteItem",
    "dynamodb:PartiQLUpdate",
    "dynamodb:PartiQLDelete",
    "dynamodb:UpdateTable",
    "dynamodb:DeleteTable",
    "dynamodb:UpdateTimeToLive",
)


def retention(days: int) -> logs.RetentionDays:
    if days not in _RETENTION:
        raise ValueError(f"log retention must be one of {sorted(_RETENTION)} days, not {days}")
    return _RETENTION[days]


class StackSecurity(Construct):
    """The customer-managed keys (rotated yearly) and the factories that use them."""

    def __init__(self, scope: Construct, construct_id: str, *, log_retention_days: int) -> None:
        super().__init__(scope, construct_id)
        self.log_retention = retention(log_retention_days)
        self._alarms_may_use_data_key = False
        self.data_key = kms.Key(
            self,
            "DataKey",
            description="voxelpipe: data at rest (S3 objects, SQS messages, DynamoDB items, backups)",
            enable_key_rotation=True,
            removal_policy=RemovalPolicy.RETAIN,
        )
        # The honest broker's identity maps (docs/dicom.md): a key of their own, so that no grant on
        # the data key reaches them, and the key's use (CloudTrail) is theirs alone.
        self.identity_map_key = kms.Key(
            self,
            "IdentityMapKey",
            description="voxelpipe: the identity maps (original DICOM identifiers), read only by egress",
            enable_key_rotation=True,
            removal_policy=RemovalPolicy.RETAIN,
        )
        self.logs_key = kms.Key(
            self,
            "LogsKey",
            description="voxelpipe: CloudWatch Logs of the functions, the API and the state machine",
            enable_key_rotation=True,
            removal_policy=RemovalPolicy.RETAIN,
        )
        # CloudWatch Logs encrypts with the key itself, for log groups of this account and region only.
        self.logs_key.add_to_resource_policy(
            iam.PolicyStatement(
                principals=[iam.ServicePrincipal(f"logs.{Aws.REGION}.amazonaws.com")],
                actions=[
                    "kms:Decrypt",
                    "kms:DescribeKey",
                    "kms:Encrypt",
                    "kms:GenerateDataKey",
                    "kms:GenerateDataKeyWithoutPlaintext",
                    "kms:ReEncryptFrom",
                    "kms:ReEncryptTo",
                ],
                resources=["*"],  # in a key policy, "*" is this key
                conditions={
                    "ArnLike": {
                        "kms:EncryptionContext:aws:logs:arn": (
                            f"arn:{Aws.PARTITION}:logs:{Aws.REGION}:{Aws.ACCOUNT_ID}:log-group:*"
                        )
                    }
                },
            )
        )

    def log_group(self, scope: Construct, construct_id: str, *, name: str | None = None) -> logs.LogGroup:
        """A log group encrypted with the logs key, keeping events for the configured retention."""
        return logs.LogGroup(
            scope,
            construct_id,
            log_group_name=name,
            encryption_key=self.logs_key,
            retention=self.log_retention,
            removal_policy=RemovalPolicy.RETAIN,
        )

    def queue(self, scope: Construct, construct_id: str, **kwargs: object) -> sqs.Queue:
        """A queue encrypted with the data key that refuses requests without TLS."""
        return sqs.Queue(
            scope,
            construct_id,
            encryption=sqs.QueueEncryption.KMS,
            encryption_master_key=self.data_key,
            data_key_reuse=Duration.hours(1),
            enforce_ssl=True,
            **kwargs,  # type: ignore[arg-type]
        )

    def queue_with_dead_letters(
        self, scope: Construct, construct_id: str, *, max_receive_count: int, **kwargs: object
    ) -> sqs.Queue:
        """`queue`, with a dead-letter queue (`{construct_id}DeadLetters`, kept 14 days) that takes
        a message after `max_receive_count` receives."""
        dead_letters = self.queue(scope, f"{construct_id}DeadLetters", retention_period=Duration.days(14))
        return self.queue(
            scope,
            construct_id,
            dead_letter_queue=sqs.DeadLetterQueue(max_receive_count=max_receive_count, queue=dead_letters),
            **kwargs,
        )

    def topic(self, scope: Construct, construct_id: str, **kwargs: object) -> sns.Topic:
        """A TLS-only topic encrypted with the data key, which CloudWatch alarms may publish to."""
        topic = sns.Topic(scope, construct_id, master_key=self.data_key, enforce_ssl=True, **kwargs)  # type: ignore[arg-type]
        if not self._alarms_may_use_data_key:
            # Alarms publish through SNS, which needs the key on CloudWatch's behalf.
            self.data_key.add_to_resource_policy(
                iam.PolicyStatement(
                    principals=[iam.ServicePrincipal("cloudwatch.amazonaws.com")],
                    actions=["kms:Decrypt", "kms:GenerateDataKey"],
                    resources=["*"],  # in a key policy, "*" is this key
                    conditions={"StringEquals": {"aws:SourceAccount": Aws.ACCOUNT_ID}},
                )
            )
            self._alarms_may_use_data_key = True
        return topic

    def back_up_tables(self, scope: Construct, tables: Sequence[dynamodb.ITable]) -> backup.BackupPlan:
        """A daily AWS Backup plan (35 days) of `tables`, in a vault encrypted with the data key."""
        vault = backup.BackupVault(
            scope, "BackupVault", encryption_key=self.data_key, removal_policy=RemovalPolicy.RETAIN
        )
        plan = backup.BackupPlan.daily35_day_retention(scope, "BackupPlan", vault)
        selection = plan.add_selection(
            "Tables", resources=[backup.BackupResource.from_dynamo_db_table(table) for table in tables]
        )
        nag.acknowledge(selection, nag.BACKUP_SERVICE_ROLE_POLICY)
        return plan

    def function_role(self, scope: Construct, construct_id: str, log_group: logs.ILogGroup) -> iam.Role:
        """A Lambda execution role that may write to its own log group and nothing else yet."""
        role = iam.Role(scope, construct_id, assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"))
        role.add_to_principal_policy(
            iam.PolicyStatement(
                actions=["logs:CreateLogStream", "logs:PutLogEvents"], resources=[log_group.log_group_arn]
            )
        )
        nag.acknowledge(role, *nag.FUNCTION_ROLE)
        return role


def access_logs_bucket(scope: Construct, construct_id: str) -> s3.Bucket:
    """A private, TLS-only, versioned bucket for S3 server access logs, which expire.

    S3 delivers access logs only to a bucket with SSE-S3 default encryption (acknowledged).
    """
    bucket = s3.Bucket(
        scope,
        construct_id,
        block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
        encryption=s3.BucketEncryption.S3_MANAGED,
        enforce_ssl=True,
        versioned=True,
        object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
        removal_policy=RemovalPolicy.RETAIN,
        lifecycle_rules=[
            s3.LifecycleRule(expiration=Duration.days(ACCESS_LOG_DAYS)),
            s3.LifecycleRule(noncurrent_version_expiration=Duration.days(NONCURRENT_LOG_DAYS)),
        ],
    )
    nag.acknowledge(bucket, *nag.ACCESS_LOGS_BUCKET)
    return bucket


def encrypted_bucket(
    scope: Construct,
    construct_id: str,
    *,
    key: kms.IKey,
    lifecycle_rules: Sequence[s3.LifecycleRule],
    logs_id: str,
    logs_prefix: str,
) -> s3.Bucket:
    """A private, TLS-only, versioned bucket, SSE-KMS with `key` (and a bucket key), whose server
    access logs go to an access-logs bucket of its own (`logs_id`), under `logs_prefix`."""
    return s3.Bucket(
        scope,
        construct_id,
        block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
        encryption=s3.BucketEncryption.KMS,
        encryption_key=key,
        bucket_key_enabled=True,
        enforce_ssl=True,
        versioned=True,
        server_access_logs_bucket=access_logs_bucket(scope, logs_id),
        server_access_logs_prefix=logs_prefix,
        lifecycle_rules=list(lifecycle_rules),
        removal_policy=RemovalPolicy.RETAIN,
    )


@dataclass(frozen=True)
class BucketAccess:
    """Which key prefixes of a bucket a principal may read, write, delete and list."""

    read: Sequence[str] = ()
    write: Sequence[str] = ()
    delete: Sequence[str] = ()  # every version too (s3:DeleteObjectVersion)
    list: Sequence[str] = ()  # list_objects_v2 under these prefixes
    list_versions: Sequence[str] = ()  # list_object_versions under these prefixes


def _objects(bucket: s3.IBucket, prefixes: Iterable[str]) -> list[str]:
    return [bucket.arn_for_objects(f"{prefix}*") for prefix in prefixes]


def grant_bucket(bucket: s3.IBucket, grantee: iam.IGrantable, access: BucketAccess) -> None:
    """Object actions on the named prefixes only, listing only under them; KMS to match.

    The `{prefix}*` object resources are acknowledged (nag.PREFIX_WILDCARD) on the grantee's role.
    """
    statements: list[iam.PolicyStatement] = []
    if access.read:
        statements.append(
            iam.PolicyStatement(actions=["s3:GetObject"], resources=_objects(bucket, access.read))
        )
    if access.write:
        statements.append(
            iam.PolicyStatement(actions=["s3:PutObject"], resources=_objects(bucket, access.write))
        )
    if access.delete:
        statements.append(
            iam.PolicyStatement(
                actions=["s3:DeleteObject", "s3:DeleteObjectVersion"],
                resources=_objects(bucket, access.delete),
            )
        )
    for action, prefixes in (("s3:ListBucket", access.list), ("s3:ListBucketVersions", access.list_versions)):
        if prefixes:
            statements.append(
                iam.PolicyStatement(
                    actions=[action],
                    resources=[bucket.bucket_arn],
                    conditions={"StringLike": {"s3:prefix": [f"{prefix}*" for prefix in prefixes]}},
                )
            )
    for statement in statements:
        grantee.grant_principal.add_to_principal_policy(statement)
    prefixes = sorted({*access.read, *access.write, *access.delete})
    if prefixes and isinstance(grantee.grant_principal, Construct):
        arn = f"<{logical_id(bucket)}.Arn>" if isinstance(bucket, Construct) else bucket.bucket_arn
        nag.acknowledge(
            grantee.grant_principal,
            nag.PREFIX_WILDCARD,
            applies_to=[nag.wildcard_resource(f"{arn}/{prefix}*") for prefix in prefixes],
        )
    if bucket.encryption_key is not None:
        actions = KMS_ENCRYPT_DECRYPT if access.write else KMS_DECRYPT
        bucket.encryption_key.grant(grantee, *actions)


def grant_table(
    table: dynamodb.Table,
    grantee: iam.IGrantable,
    *,
    write: bool,
    indexes: Sequence[str],
    delete: bool = False,
) -> None:
    """Item actions on the table and its named indexes (no `index/*`); KMS to match. `delete`
    without `write`: reads, and deleting items (a purge), but no puts or updates.

    An append-only table (wiring.APPEND_ONLY_RESOURCES: the audit tables) gets reads and PutItem
    at most, and an explicit Deny of every way to change or remove its items, whatever else the
    role is granted (a later grant, a broader policy)."""
    resources = [table.table_arn, *(f"{table.table_arn}/index/{name}" for name in indexes)]
    append_only = table.node.id in APPEND_ONLY_RESOURCES
    if append_only:
        actions = [*DYNAMODB_READ, *(("dynamodb:PutItem",) if write or delete else ())]
    else:
        actions = [*DYNAMODB_READ, *(DYNAMODB_WRITE if write else ("dynamodb:DeleteItem",) if delete else ())]
    grantee.grant_principal.add_to_principal_policy(iam.PolicyStatement(actions=actions, resources=resources))
    if append_only:
        grantee.grant_principal.add_to_principal_policy(
            iam.PolicyStatement(effect=iam.Effect.DENY, actions=list(APPEND_ONLY_DENIED), resources=resources)
        )
    if table.encryption_key is not None:
        table.encryption_key.grant(grantee, *(DYNAMODB_KMS_WRITE if write or delete else DYNAMODB_KMS_READ))


class IdentityMapUse(Enum):
    """What a function may do with the identity map table (infra/access.py says who may do what)."""

    WRITE = "write"  # add to a study's map: UpdateItem (map updates), never a read
    READ = "read"  # egress: GetItem
    DELETE = "delete"  # deleting a study (the API) and purging it again (the reaper)


IDENTITY_MAP_ACTIONS: dict[IdentityMapUse, tuple[str, ...]] = {
    IdentityMapUse.WRITE: ("dynamodb:PutItem", "dynamodb:UpdateItem"),
    IdentityMapUse.READ: ("dynamodb:GetItem",),
    IdentityMapUse.DELETE: ("dynamodb:DeleteItem",),
}


def grant_identity_map(table: dynamodb.Table, grantee: iam.IGrantable, use: IdentityMapUse) -> None:
    """Exactly `use`'s item actions on the identity map table, and its key only through DynamoDB.

    DynamoDB decrypts the table key on the caller's behalf for every request, reads and writes
    alike (the caller needs kms:Decrypt on it), so each user gets the key's actions on the
    condition kms:ViaService = DynamoDB: none can decrypt anything with it directly, and what it
    can see of the items is what its item actions allow (only READ reads).
    """
    grantee.grant_principal.add_to_principal_policy(
        iam.PolicyStatement(actions=list(IDENTITY_MAP_ACTIONS[use]), resources=[table.table_arn])
    )
    key = table.encryption_key
    assert key is not None, "the identity map table has a key of its own"
    grantee.grant_principal.add_to_principal_policy(
        iam.PolicyStatement(
            actions=list(DYNAMODB_KMS_WRITE if use is IdentityMapUse.WRITE else DYNAMODB_KMS_READ),
            resources=[key.key_arn],
            conditions={"StringEquals": {"kms:ViaService": f"dynamodb.{Aws.REGION}.amazonaws.com"}},
        )
    )


def grant_queue_send(queue: sqs.IQueue, grantee: iam.IGrantable) -> None:
    grantee.grant_principal.add_to_principal_policy(
        iam.PolicyStatement(actions=list(SQS_SEND), resources=[queue.queue_arn])
    )
    if queue.encryption_master_key is not None:
        queue.encryption_master_key.grant(grantee, *KMS_ENCRYPT_DECRYPT)


@jsii.implements(lambda_.IDestination)
class QueueFailureDestination:
    """An async-invoke on-failure destination granted exactly `grant_queue_send`.

    (CDK's SqsDestination grants `kms:GenerateDataKey*`/`kms:ReEncrypt*` wildcards.)
    """

    def __init__(self, queue: sqs.IQueue) -> None:
        self.queue = queue

    def bind(
        self, scope: Construct, fn: lambda_.IFunction, *, type: lambda_.DestinationType
    ) -> lambda_.DestinationConfig:
        grant_queue_send(self.queue, fn)
        return lambda_.DestinationConfig(destination=self.queue.queue_arn)


def logical_id(construct: Construct) -> str:
    """The template's logical id of a construct's CloudFormation resource (for nag `appliesTo`)."""
    child = construct.node.default_child
    resource = child if child is not None else construct
    stack = Stack.of(construct)
    return str(stack.resolve(stack.get_logical_id(resource)))  # type: ignore[arg-type]
