"""The voxelpipe stack: storage, queues, tables, functions and the study workflow."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from aws_cdk import ArnFormat, Aws, CfnOutput, Duration, Stack, Tags
from aws_cdk import aws_cognito as cognito
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_event_sources as event_sources
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_s3_notifications as s3n
from aws_cdk import aws_secretsmanager as secretsmanager
from aws_cdk import aws_sqs as sqs
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

from infra import nag
from infra.access import (
    BUCKET_ACCESS,
    DESTINATION_SECRET_ACTIONS,
    EGRESS_ASSUMES_DELIVERY_ROLES,
    IDENTITY_MAP_ACCESS,
    PSEUDONYM_SECRET_READERS,
    PURGE_ONLY_TABLES,
    READ_ONLY_TABLES,
    USER_POOL_ACTIONS,
    grant_executions,
)
from infra.api import StudyApi
from infra.dicom_receiver import DicomReceiver, DicomReceiverSettings
from infra.gpu import GpuWorkers
from infra.identity import Federation
from infra.identity_settings import identity_settings, network_settings
from infra.layers import VOXELPIPE_LAYER
from infra.live import LiveProgress
from infra.monitoring import ALARM_EMAIL_CONTEXT, WORK_QUEUE_OLDEST_S, Monitoring
from infra.notifications import StudyNotifications
from infra.private_api import PrivateEndpoints
from infra.security import (
    QueueFailureDestination,
    StackSecurity,
    encrypted_bucket,
    grant_bucket,
    grant_identity_map,
    grant_queue_send,
    grant_table,
    logical_id,
)
from infra.settings import StackSettings
from infra.tables import idempotency_table, table_for_model
from infra.workflow import StudyWorkflow
from voxelpipe.destinations import DELIVERY_ROLE_NAME_PREFIX
from voxelpipe.function_specs import (
    API,
    COMPLETE_TRANSFERS,
    DEPENDENCY_GROUPS,
    DICOM_RECEIVER,
    DISPATCH,
    EGRESS,
    EXPORT,
    FUNCTIONS,
    GPU_WORKER_ENV,
    INGEST,
    LIVE,
    LIVE_AUTHORIZER,
    LIVE_PUSH,
    POWERTOOLS_ENV,
    REAPER,
    REPROCESS_BATCHES,
    SCALER,
    TOKEN_CLAIMS,
    WEBHOOK,
    DependencyGroup,
    FunctionSpec,
    function_spec,
)
from voxelpipe.gpu_settings import GpuSettings
from voxelpipe.records import (
    IDENTITY_MODELS,
    LIVE_MODELS,
    REGISTRY_MODELS,
    STATUS_MODELS,
    TENANT_MODELS,
    table_schema,
)
from voxelpipe.wiring import ENV_RESOURCES, FUNCTION_TAG, GPU_RESOURCES, EnvVar, Prefix, Resource
from voxelpipe.workflow_settings import (
    DISPATCH_BATCH_SIZE,
    INGEST_ASYNC_RETRIES,
    LOW_PRIORITY_DISPATCH_CONCURRENCY,
    QUEUE_MAX_RECEIVE_COUNT,
    QUEUE_VISIBILITY_TIMEOUT_S,
)

ROOT = Path(__file__).resolve().parent.parent
# Retention of the short-lived prefixes.
QUARANTINE_DAYS = 30
WORK_DAYS = 7
EXPORT_DAYS = 1
# Presigned multipart uploads left unfinished are aborted (and their parts removed) after this.
INCOMPLETE_UPLOAD_DAYS = 2
# The viewer's pages (API Gateway's origin) read volumes through presigned GETs (docs/viewer.md):
# any origin, GET and HEAD, no credentials: the presigned URL is the credential, and naming the
# API's origin would make the bucket depend on the API that depends on it (a CloudFormation cycle).
VIEWER_CORS_MAX_AGE_S = 3600
# Powertools settings shared by every function.
# The construct id CDK gives its bucket-notifications handler (a singleton per stack).
NOTIFICATIONS_HANDLER_ID = "BucketNotificationsHandler050a0587b7544547bf325f094a3db834"
_ASSET_EXCLUDES = ["**/__pycache__", "**/*.pyc", "*.egg-info"]
# An image's build context is the repository, less what no Dockerfile copies (listed, not
# negated, so that fingerprinting skips those folders instead of walking them).
_IMAGE_CONTEXT_EXCLUDES = [
    ".*",
    "build",
    "cdk.out",
    "tests",
    "bench",
    "docs",
    "events",
    "app.py",
    "cdk.json",
    "Makefile",
    *_ASSET_EXCLUDES,
]


class VoxelpipeStack(Stack):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        layers_dir: Path,
        **kwargs: object,
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)  # type: ignore[arg-type]
        self.settings = StackSettings.from_context(self.node)
        # Sign-in (identity providers, hosted UI) and network mode: docs/security.md.
        self.identity = identity_settings(self.node.try_get_context)
        self.network = network_settings(self.node.try_get_context)
        self.security = StackSecurity(self, "Security", log_retention_days=self.settings.log_retention_days)
        key = self.security.data_key

        bucket = encrypted_bucket(
            self,
            Resource.BUCKET,
            key=key,
            logs_id="AccessLogsBucket",
            logs_prefix=f"{Resource.BUCKET}/",
            lifecycle_rules=[
                s3.LifecycleRule(prefix=Prefix.QUARANTINE.value, expiration=Duration.days(QUARANTINE_DAYS)),
                s3.LifecycleRule(prefix=Prefix.WORK.value, expiration=Duration.days(WORK_DAYS)),
                # Cohort exports too large for a response: their presigned link lasts an hour.
                s3.LifecycleRule(prefix=Prefix.EXPORTS.value, expiration=Duration.days(EXPORT_DAYS)),
                s3.LifecycleRule(noncurrent_version_expiration=Duration.days(WORK_DAYS)),
                s3.LifecycleRule(
                    abort_incomplete_multipart_upload_after=Duration.days(INCOMPLETE_UPLOAD_DAYS)
                ),
                # Results stay readable at once (presigned links) in the colder class.
                s3.LifecycleRule(
                    prefix=Prefix.DERIVED.value,
                    transitions=[
                        s3.Transition(
                            storage_class=s3.StorageClass.GLACIER_INSTANT_RETRIEVAL,
                            transition_after=Duration.days(self.settings.derived_transition_days),
                        )
                    ],
                ),
            ],
        )
        nag.acknowledge(bucket, nag.INGEST_BUCKET)
        bucket.add_cors_rule(
            allowed_methods=[s3.HttpMethods.GET, s3.HttpMethods.HEAD],
            allowed_origins=["*"],
            allowed_headers=["*"],
            exposed_headers=["Content-Length", "Content-Range", "ETag"],
            max_age=VIEWER_CORS_MAX_AGE_S,
        )
        queues = {
            Resource.HIGH_PRIORITY_QUEUE: self._work_queue(Resource.HIGH_PRIORITY_QUEUE),
            Resource.NORMAL_PRIORITY_QUEUE: self._work_queue(Resource.NORMAL_PRIORITY_QUEUE),
            Resource.LOW_PRIORITY_QUEUE: self._work_queue(Resource.LOW_PRIORITY_QUEUE),
        }
        tables = {
            ENV_RESOURCES[var]: table_for_model(self, ENV_RESOURCES[var], model, key=key)
            for var, model in {**STATUS_MODELS, **REGISTRY_MODELS, **LIVE_MODELS, **TENANT_MODELS}.items()
        }
        tables[Resource.IDEMPOTENCY_TABLE] = idempotency_table(self, Resource.IDEMPOTENCY_TABLE, key=key)
        # The identity maps: under their own key, granted only as IDENTITY_MAP_ACCESS says.
        tables.update(
            {
                ENV_RESOURCES[var]: table_for_model(
                    self, ENV_RESOURCES[var], model, key=self.security.identity_map_key
                )
                for var, model in IDENTITY_MODELS.items()
            }
        )
        table_indexes = {
            ENV_RESOURCES[var]: [
                index["index_name"] for index in table_schema(model)["global_secondary_indexes"]
            ]
            for var, model in {**STATUS_MODELS, **REGISTRY_MODELS, **LIVE_MODELS, **TENANT_MODELS}.items()
        }
        self.security.back_up_tables(self, list(tables.values()))
        # `make layers` builds them (infra/layers.py), with bytecode for python3.12.
        voxelpipe_layer = lambda_.LayerVersion(
            self,
            "VoxelpipeLayer",
            code=lambda_.Code.from_asset(str(layers_dir / VOXELPIPE_LAYER)),
            compatible_runtimes=[lambda_.Runtime.PYTHON_3_12],
            description="The voxelpipe domain package",
        )
        dependency_layers = {
            group: lambda_.LayerVersion(
                self,
                f"{group.value.capitalize()}DependencyLayer",
                code=lambda_.Code.from_asset(str(layers_dir / group.value)),
                compatible_runtimes=[lambda_.Runtime.PYTHON_3_12],
                description=f"Pinned third-party dependencies: {', '.join(DEPENDENCY_GROUPS[group])}",
            )
            for group in DependencyGroup
        }

        notifications = StudyNotifications(self, self.security)
        # The key subjects' pseudonyms and date offsets derive from (voxelpipe.pseudonyms); never
        # rotated (nag.PSEUDONYM_SECRET says why).
        self.pseudonym_secret = secretsmanager.Secret(
            self,
            Resource.PSEUDONYM_SECRET,
            description="voxelpipe: the root of subjects' pseudonyms, date offsets and exam study ids",
            encryption_key=self.security.data_key,
            generate_secret_string=secretsmanager.SecretStringGenerator(
                exclude_punctuation=True, password_length=64
            ),
        )
        nag.acknowledge(self.pseudonym_secret, *nag.PSEUDONYM_SECRET)
        # The GPU half (docs/gpu.md); its settings come from wiring, overridable by CDK context.
        gpu = GpuWorkers(
            self,
            "GpuWorkers",
            settings=GpuSettings.from_context(self.node.try_get_context),
            security=self.security,
            bucket=bucket,
            tables=tables,
            event_bus=notifications.bus,
            table_indexes=table_indexes,
            worker_env_vars=GPU_WORKER_ENV,
            base_env=POWERTOOLS_ENV,
            image_context=ROOT,
            image_excludes=_IMAGE_CONTEXT_EXCLUDES,
        )
        functions = {
            spec.name: self._function(
                spec,
                [voxelpipe_layer, *(dependency_layers[group] for group in spec.dependencies)],
                # Egress sends C-STORE to PACS the VPC reaches (peered, VPN): it runs in the VPC.
                vpc=gpu.vpc if spec is EGRESS else None,
            )
            for spec in FUNCTIONS
        }
        # S3 invokes ingest asynchronously: after Lambda's own retries, a failed event is kept
        # here (for a redrive) instead of being dropped.
        self.ingest_failures = self.security.queue(self, "IngestFailures", retention_period=Duration.days(14))
        nag.acknowledge(self.ingest_failures, nag.FAILURE_DESTINATION_QUEUE)
        functions[INGEST.name].configure_async_invoke(
            on_failure=QueueFailureDestination(self.ingest_failures),
            retry_attempts=INGEST_ASYNC_RETRIES,
            max_event_age=Duration.hours(6),
        )

        # Grants follow the environment: a function may use exactly the resources it is told of.
        for spec in FUNCTIONS:
            function = functions[spec.name]
            for var in spec.env:
                resource = ENV_RESOURCES.get(var)
                if resource is None or resource is Resource.STATE_MACHINE or resource in GPU_RESOURCES:
                    continue
                if resource is Resource.BUCKET:
                    function.add_environment(var, bucket.bucket_name)
                    if spec.name not in BUCKET_ACCESS:
                        raise KeyError(
                            f"{spec.name} is told of the bucket: declare its access in infra/access.py"
                        )
                    grant_bucket(bucket, function, BUCKET_ACCESS[spec.name])
                elif resource in queues:
                    function.add_environment(var, queues[resource].queue_url)
                    grant_queue_send(queues[resource], function)
                elif resource in notifications.resources:
                    notifications.bind(function, var, resource)
                elif resource is Resource.PSEUDONYM_SECRET:
                    if spec.name not in PSEUDONYM_SECRET_READERS:
                        raise KeyError(
                            f"{spec.name} is told of the pseudonym secret: declare it in infra/access.py"
                        )
                    function.add_environment(var, self.pseudonym_secret.secret_arn)
                    self.pseudonym_secret.grant_read(function)
                elif resource is Resource.IDENTITY_MAP_TABLE:
                    function.add_environment(var, tables[resource].table_name)
                    if spec.name not in IDENTITY_MAP_ACCESS:
                        raise KeyError(
                            f"{spec.name} is told of the identity maps: declare its use in infra/access.py"
                        )
                    grant_identity_map(tables[resource], function, IDENTITY_MAP_ACCESS[spec.name])
                else:
                    function.add_environment(var, tables[resource].table_name)
                    grant_table(
                        tables[resource],
                        function,
                        write=resource not in READ_ONLY_TABLES.get(spec.name, frozenset())
                        and resource not in PURGE_ONLY_TABLES.get(spec.name, frozenset()),
                        delete=resource in PURGE_ONLY_TABLES.get(spec.name, frozenset()),
                        indexes=table_indexes.get(resource, []),
                    )

        gpu.wire_scaler(functions[SCALER.name])
        # The DICOM C-STORE receiver (docs/dicom-receiver.md), in the stack's VPC (the GPU half's).
        self.dicom_receiver = DicomReceiver(
            self,
            "DicomReceiver",
            spec=DICOM_RECEIVER,
            settings=DicomReceiverSettings.from_context(self.node),
            vpc=gpu.vpc,
            security=self.security,
            bucket=bucket,
            tables=tables,
            table_indexes=table_indexes,
            event_bus=notifications.bus,
            pseudonym_secret=self.pseudonym_secret,
            base_env=POWERTOOLS_ENV,
            image_context=ROOT,
            image_excludes=_IMAGE_CONTEXT_EXCLUDES,
        )
        gpu.wire_routing(functions[spec.name] for spec in FUNCTIONS if EnvVar.GPU_ANALYSES in spec.env)
        workflow = StudyWorkflow(
            self,
            Resource.STATE_MACHINE,
            functions=functions,
            gpu_queue=gpu.queue,
            gpu=gpu.settings,
            log_group=self.security.log_group(self, f"{Resource.STATE_MACHINE}Logs"),
        )
        gpu.grant_task_responses(workflow.state_machine)
        nag.acknowledge(workflow.state_machine.role, nag.GPU_TASK_TOKENS)
        nag.acknowledge(workflow.state_machine.role, nag.STATE_MACHINE_ROLE[1])
        nag.acknowledge(
            workflow.state_machine.role,
            nag.STATE_MACHINE_ROLE[0],
            applies_to=[
                "Resource::*",
                *(nag.wildcard_resource(f"<{logical_id(functions[spec.name])}.Arn>:*") for spec in FUNCTIONS),
            ],
        )
        for spec in FUNCTIONS:
            if EnvVar.STATE_MACHINE_ARN in spec.env:
                functions[spec.name].add_environment(
                    EnvVar.STATE_MACHINE_ARN, workflow.state_machine.state_machine_arn
                )
                grant_executions(workflow.state_machine, functions[spec.name], spec.name)

        bucket.add_event_notification(
            s3.EventType.OBJECT_CREATED,
            s3n.LambdaDestination(functions[INGEST.name]),
            s3.NotificationKeyFilter(prefix=Prefix.UPLOADS.value),
        )
        # CDK's singleton handler that applies the notifications at deploy time, and its policy.
        for construct in (
            self.node.try_find_child(NOTIFICATIONS_HANDLER_ID),
            bucket.node.try_find_child("Notifications"),
        ):
            if construct is not None:
                nag.acknowledge(construct, *nag.BUCKET_NOTIFICATIONS_HANDLER)
        for resource, queue in queues.items():
            functions[DISPATCH.name].add_event_source(
                event_sources.SqsEventSource(
                    queue,
                    batch_size=DISPATCH_BATCH_SIZE,
                    report_batch_item_failures=True,
                    # Bulk reprocessing is dispatched by two concurrent invocations at most (the
                    # batches' own throttle bounds what is queued there: pipeline/batches.py).
                    max_concurrency=LOW_PRIORITY_DISPATCH_CONCURRENCY
                    if resource is Resource.LOW_PRIORITY_QUEUE
                    else None,
                )
            )

        # Private mode: the API and presigned URLs through interface endpoints in the stack's VPC.
        self.private_endpoints = (
            PrivateEndpoints(self, "PrivateEndpoints", vpc=gpu.vpc, settings=self.network, bucket=bucket)
            if self.network.private
            else None
        )
        self.api = StudyApi(
            self,
            "Api",
            handler=functions[API.name],
            export_handler=functions[EXPORT.name],
            security=self.security,
            cors_allowed_origins=self.settings.cors_allowed_origins,
            private=self.private_endpoints,
        )
        if self.private_endpoints is not None:
            # Both presign (the export function: a large export's 303).
            for api_function in (API, EXPORT):
                functions[api_function.name].add_environment(
                    EnvVar.S3_PUBLIC_ENDPOINT, self.private_endpoints.s3_endpoint_url
                )
        # Federated users' tenant and roles: the pre-token-generation trigger (voxelpipe.federation).
        self.token_claims = (
            self._function(
                TOKEN_CLAIMS, [voxelpipe_layer, *(dependency_layers[g] for g in TOKEN_CLAIMS.dependencies)]
            )
            if self.identity.federated
            else None
        )
        self.federation = Federation(
            self,
            "Identity",
            settings=self.identity,
            user_pool=self.api.user_pool,
            client=self.api.client,
            trigger=self.token_claims,
            root=ROOT,
        )
        # Machine clients and `voxelpipe login` use the hosted UI's domain (when there is one).
        self._wire_machine_clients(functions, login_domain=self.federation.domain)
        # Live progress is a WebSocket API, which API Gateway cannot make private: a private
        # deployment has none, and clients poll (GET /health names no live_url; docs/security.md).
        self.live = (
            LiveProgress(
                self,
                "Live",
                security=self.security,
                bus=notifications.bus,
                routes=functions[LIVE.name],
                authorizer=functions[LIVE_AUTHORIZER.name],
                push=functions[LIVE_PUSH.name],
            )
            if not self.network.private
            else None
        )
        # Empty: no live progress (voxelpipe.live.live_url), as GET /health then says.
        functions[API.name].add_environment(EnvVar.LIVE_URL, self.live.url if self.live is not None else "")
        for api_function in (API, EXPORT):
            functions[api_function.name].add_environment(
                EnvVar.CORS_ALLOWED_ORIGINS, ",".join(self.settings.cors_allowed_origins)
            )
        # The access audit's retention (unset: kept) and the quota defaults, from context: for both
        # functions that serve the API's app.
        for api_function in (API, EXPORT):
            functions[api_function.name].add_environment(
                EnvVar.AUDIT_RETENTION_DAYS,
                "" if self.settings.audit_retention_days is None else str(self.settings.audit_retention_days),
            )
            functions[api_function.name].add_environment(
                EnvVar.QUOTA_DEFAULTS, json.dumps(self.settings.quota_defaults or {}, sort_keys=True)
            )
        functions[LIVE_AUTHORIZER.name].add_environment(EnvVar.USER_POOL_ID, self.api.user_pool.user_pool_id)
        functions[LIVE_AUTHORIZER.name].add_environment(
            EnvVar.USER_POOL_CLIENT_ID, self.api.client.user_pool_client_id
        )
        notifications.deliver_with(functions[WEBHOOK.name])
        notifications.deliver_outputs_with(functions[EGRESS.name])
        self._wire_destinations(functions)
        StudyNotifications.schedule_reaper(self, functions[REAPER.name])
        StudyNotifications.schedule_transfer_completion(self, functions[COMPLETE_TRANSFERS.name])
        StudyNotifications.schedule_reprocess_batches(self, functions[REPROCESS_BATCHES.name])
        functions[API.name].add_environment(
            EnvVar.BATCH_MAX_IN_FLIGHT, str(self.settings.reprocess_max_in_flight)
        )
        # The reaper reads queue depths (it re-drives through the queues it is told of); the batch
        # sweep reads them to let clinical work go first.
        for queue in queues.values():
            queue.grant(functions[REAPER.name], "sqs:GetQueueAttributes")
            queue.grant(functions[REPROCESS_BATCHES.name], "sqs:GetQueueAttributes")

        self.notifications = notifications

        self.bucket = bucket
        self.queues = queues
        self.tables = tables
        self.functions = functions
        self.state_machine = workflow.state_machine
        self.gpu = gpu
        # Last, so that it finds everything above (keep it last when adding resources).
        self.monitoring = self._monitor(functions, notifications)

    def _monitor(
        self, functions: dict[str, lambda_.Function], notifications: StudyNotifications
    ) -> Monitoring:
        """Alarms and the dashboard for every queue, dead-letter queue, function and state machine
        of the stack, found by walking it: a queue or state machine added later is covered too."""
        monitoring = Monitoring(
            self,
            "Monitoring",
            topic=self.security.topic(self, "AlarmTopic", display_name="voxelpipe alarms"),
            alarm_email=self.node.try_get_context(ALARM_EMAIL_CONTEXT),
        )
        queues = [c for c in self.node.find_all() if isinstance(c, sqs.Queue)]
        dead_letters = {id(q.dead_letter_queue.queue) for q in queues if q.dead_letter_queue}
        # Failure destinations hold what gave up, like dead-letter queues.
        failures = {id(self.ingest_failures)}
        # Webhook retries back off up to 15 minutes a try: their oldest message may be that old.
        # A GPU task may wait for a worker to start, up to its task timeout (then its token is lost).
        oldest_s = {
            id(notifications.webhook_queue): 3600,
            # Deliveries back off up to an hour a try, about 2 hours in all before the DLQ.
            id(notifications.delivery_queue): 3 * 3600,
            id(self.gpu.queue): self.gpu.settings.task_timeout_s,
        }
        for queue in queues:
            if id(queue) in failures:
                monitoring.monitor_dead_letters(queue.node.id, queue)
            elif id(queue) not in dead_letters:
                dlq = queue.dead_letter_queue.queue if queue.dead_letter_queue else None
                monitoring.monitor_queue(
                    queue.node.id, queue, dlq, oldest_s=oldest_s.get(id(queue), WORK_QUEUE_OLDEST_S)
                )
        for spec in FUNCTIONS:
            monitoring.monitor_function(spec.construct_id, functions[spec.name])
        if self.token_claims is not None:
            monitoring.monitor_function(TOKEN_CLAIMS.construct_id, self.token_claims)
        for machine in (c for c in self.node.find_all() if isinstance(c, sfn.StateMachine)):
            name = machine.node.scope.node.id if machine.node.scope else machine.node.id
            monitoring.monitor_state_machine(name, machine)
        return monitoring

    def _wire_machine_clients(
        self, functions: dict[str, lambda_.Function], *, login_domain: cognito.UserPoolDomain | None
    ) -> None:
        """The API creates and deletes machine clients' app clients in the user pool (no other
        function may: infra/access.py), and, with the hosted UI's domain (docs/security.md), tells
        `voxelpipe login` where to sign in; machine clients get tokens at its /oauth2/token."""
        pool = self.api.user_pool
        api = functions[API.name]
        api.add_environment(EnvVar.USER_POOL_ID, pool.user_pool_id)
        api.add_environment(EnvVar.MACHINE_CLIENT_MAX_DAYS, str(self.settings.machine_client_days))
        api.add_environment(EnvVar.LOGIN_CLIENT_ID, self.api.client.user_pool_client_id)
        # Without a hosted UI there is nowhere to sign in: GET /health then names no `login`.
        api.add_environment(EnvVar.LOGIN_BASE_URL, login_domain.base_url() if login_domain else "")
        if login_domain is not None:
            CfnOutput(self, "TokenEndpoint", value=f"{login_domain.base_url()}/oauth2/token")
        for name, actions in USER_POOL_ACTIONS.items():
            functions[name].add_to_role_policy(
                iam.PolicyStatement(actions=list(actions), resources=[pool.user_pool_arn])
            )

    def _wire_destinations(self, functions: dict[str, lambda_.Function]) -> None:
        """Destinations' secrets, one per destination under this deployment's name prefix (the API
        writes them, egress reads them), and the delivery roles egress may assume."""
        prefix = f"{self.stack_name}/destinations/"
        secrets = self.format_arn(
            service="secretsmanager",
            resource="secret",
            resource_name=f"{prefix}*",
            arn_format=ArnFormat.COLON_RESOURCE_NAME,
        )
        for name, actions in DESTINATION_SECRET_ACTIONS.items():
            function = functions[name]
            if EnvVar.DESTINATION_SECRET_PREFIX in function_spec(name).env:
                function.add_environment(EnvVar.DESTINATION_SECRET_PREFIX, prefix)
            function.add_to_role_policy(iam.PolicyStatement(actions=list(actions), resources=[secrets]))
            nag.acknowledge(
                function.role or function,
                nag.DESTINATION_SECRETS,
                applies_to=[
                    nag.wildcard_resource(
                        f"arn:<AWS::Partition>:secretsmanager:{nag.region_of(self)}:{nag.account_of(self)}:"
                        f"secret:{self.stack_name}/destinations/*"
                    )
                ],
            )
        egress = functions[EGRESS_ASSUMES_DELIVERY_ROLES]
        roles = f"arn:{Aws.PARTITION}:iam::*:role/{DELIVERY_ROLE_NAME_PREFIX}*"
        egress.add_to_role_policy(iam.PolicyStatement(actions=["sts:AssumeRole"], resources=[roles]))
        nag.acknowledge(
            egress.role or egress,
            nag.DELIVERY_ROLES,
            applies_to=[
                nag.wildcard_resource(f"arn:<AWS::Partition>:iam::*:role/{DELIVERY_ROLE_NAME_PREFIX}*")
            ],
        )
        nag.acknowledge(egress.role or egress, nag.EGRESS_VPC)

    def _work_queue(self, resource: Resource) -> sqs.Queue:
        return self.security.queue_with_dead_letters(
            self,
            resource,
            max_receive_count=QUEUE_MAX_RECEIVE_COUNT,
            visibility_timeout=Duration.seconds(QUEUE_VISIBILITY_TIMEOUT_S),
        )

    def _function(
        self, spec: FunctionSpec, layers: list[lambda_.LayerVersion], vpc: ec2.IVpc | None = None
    ) -> lambda_.Function:
        """A function with its own KMS-encrypted log group and a role with no managed policy."""
        log_group = self.security.log_group(self, f"{spec.construct_id}Logs")
        role = self.security.function_role(self, f"{spec.construct_id}Role", log_group)
        common: dict[str, Any] = {
            "role": role,
            "log_group": log_group,
            "architecture": lambda_.Architecture.X86_64,
            "description": spec.description,
            "memory_size": spec.memory_mb,
            "timeout": Duration.seconds(spec.timeout_s),
            "tracing": lambda_.Tracing.ACTIVE,
            "environment": {**POWERTOOLS_ENV, **{str(var): value for var, value in spec.settings.items()}},
        }
        if vpc is not None:
            common["vpc"] = vpc
            common["vpc_subnets"] = ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS)
        function: lambda_.Function
        if spec.image:
            # Synthesis only stages the build context; the image is built at deploy time.
            function = lambda_.DockerImageFunction(
                self,
                spec.construct_id,
                code=lambda_.DockerImageCode.from_image_asset(
                    str(ROOT), file=f"{spec.code_dir}/Dockerfile", exclude=_IMAGE_CONTEXT_EXCLUDES
                ),
                **common,
            )
        else:
            function = lambda_.Function(
                self,
                spec.construct_id,
                runtime=lambda_.Runtime.PYTHON_3_12,
                code=lambda_.Code.from_asset(str(ROOT / spec.code_dir), exclude=_ASSET_EXCLUDES),
                handler=spec.handler,
                layers=layers,
                **common,
            )
        Tags.of(function).add(FUNCTION_TAG, spec.name)
        nag.acknowledge(function, *nag.FUNCTION)
        return function
