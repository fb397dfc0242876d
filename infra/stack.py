"""The voxelpipe stack: storage, queues, tables, functions and the study workflow."""

from __future__ import annotations

from pathlib import Path

from aws_cdk import Duration, RemovalPolicy, Stack, Tags
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_destinations as destinations
from aws_cdk import aws_lambda_event_sources as event_sources
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_s3_notifications as s3n
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from infra.api import StudyApi
from infra.gpu import GpuWorkers
from infra.tables import idempotency_table, table_for_model
from infra.workflow import StudyWorkflow
from voxelpipe.records import REGISTRY_MODELS, STATUS_MODELS
from voxelpipe.wiring import (
    API,
    DISPATCH,
    DISPATCH_BATCH_SIZE,
    ENV_RESOURCES,
    FUNCTION_TAG,
    FUNCTIONS,
    GPU_RESOURCES,
    GPU_WORKER_ENV,
    INGEST,
    QUEUE_MAX_RECEIVE_COUNT,
    QUEUE_VISIBILITY_TIMEOUT_S,
    SCALER,
    EnvVar,
    FunctionSpec,
    GpuSettings,
    Prefix,
    Resource,
)

ROOT = Path(__file__).resolve().parent.parent
# Retention of the short-lived prefixes.
QUARANTINE_DAYS = 30
WORK_DAYS = 7
# Powertools settings shared by every function.
POWERTOOLS_ENV = {
    "POWERTOOLS_SERVICE_NAME": "voxelpipe",
    "POWERTOOLS_METRICS_NAMESPACE": "Voxelpipe",
    "POWERTOOLS_LOG_LEVEL": "INFO",
}
INGEST_ASYNC_RETRIES = 2
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
        dependency_layer_dir: Path,
        **kwargs: object,
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)  # type: ignore[arg-type]

        bucket = s3.Bucket(
            self,
            Resource.BUCKET,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            encryption=s3.BucketEncryption.S3_MANAGED,
            enforce_ssl=True,
            versioned=True,
            removal_policy=RemovalPolicy.RETAIN,
            lifecycle_rules=[
                s3.LifecycleRule(prefix=Prefix.QUARANTINE.value, expiration=Duration.days(QUARANTINE_DAYS)),
                s3.LifecycleRule(prefix=Prefix.WORK.value, expiration=Duration.days(WORK_DAYS)),
                s3.LifecycleRule(noncurrent_version_expiration=Duration.days(WORK_DAYS)),
            ],
        )
        queues = {
            Resource.HIGH_PRIORITY_QUEUE: self._work_queue(Resource.HIGH_PRIORITY_QUEUE),
            Resource.NORMAL_PRIORITY_QUEUE: self._work_queue(Resource.NORMAL_PRIORITY_QUEUE),
        }
        tables = {
            ENV_RESOURCES[var]: table_for_model(self, ENV_RESOURCES[var], model)
            for var, model in {**STATUS_MODELS, **REGISTRY_MODELS}.items()
        }
        tables[Resource.IDEMPOTENCY_TABLE] = idempotency_table(self, Resource.IDEMPOTENCY_TABLE)
        layers = [
            lambda_.LayerVersion(
                self,
                "VoxelpipeLayer",
                code=lambda_.Code.from_asset(str(ROOT / "layers" / "voxelpipe"), exclude=_ASSET_EXCLUDES),
                compatible_runtimes=[lambda_.Runtime.PYTHON_3_12],
                description="The voxelpipe domain package",
            ),
            lambda_.LayerVersion(
                self,
                "DependencyLayer",
                code=lambda_.Code.from_asset(str(dependency_layer_dir)),
                compatible_runtimes=[lambda_.Runtime.PYTHON_3_12],
                description="Pinned third-party dependencies (make layers)",
            ),
        ]

        functions = {spec.name: self._function(spec, layers) for spec in FUNCTIONS}
        # S3 invokes ingest asynchronously: after Lambda's own retries, a failed event is kept
        # here (for a redrive) instead of being dropped.
        self.ingest_failures = sqs.Queue(
            self,
            "IngestFailures",
            retention_period=Duration.days(14),
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
        )
        functions[INGEST.name].configure_async_invoke(
            on_failure=destinations.SqsDestination(self.ingest_failures),
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
                    bucket.grant_read_write(function)
                    bucket.grant_delete(function)
                elif resource in queues:
                    function.add_environment(var, queues[resource].queue_url)
                    queues[resource].grant_send_messages(function)
                else:
                    function.add_environment(var, tables[resource].table_name)
                    tables[resource].grant_read_write_data(function)

        # The GPU half (docs/gpu.md); its settings come from wiring, overridable by CDK context.
        gpu = GpuWorkers(
            self,
            "GpuWorkers",
            settings=GpuSettings.from_context(self.node.try_get_context),
            bucket=bucket,
            tables=tables,
            worker_env_vars=GPU_WORKER_ENV,
            base_env=POWERTOOLS_ENV,
            image_context=ROOT,
            image_excludes=_IMAGE_CONTEXT_EXCLUDES,
        )
        gpu.wire_scaler(functions[SCALER.name])
        gpu.wire_dispatch(functions[DISPATCH.name])
        workflow = StudyWorkflow(
            self, Resource.STATE_MACHINE, functions=functions, gpu_queue=gpu.queue, gpu=gpu.settings
        )
        gpu.grant_task_responses(workflow.state_machine)
        for spec in FUNCTIONS:
            if EnvVar.STATE_MACHINE_ARN in spec.env:
                functions[spec.name].add_environment(
                    EnvVar.STATE_MACHINE_ARN, workflow.state_machine.state_machine_arn
                )
                workflow.state_machine.grant_start_execution(functions[spec.name])

        bucket.add_event_notification(
            s3.EventType.OBJECT_CREATED,
            s3n.LambdaDestination(functions[INGEST.name]),
            s3.NotificationKeyFilter(prefix=Prefix.UPLOADS.value),
        )
        for queue in queues.values():
            functions[DISPATCH.name].add_event_source(
                event_sources.SqsEventSource(
                    queue, batch_size=DISPATCH_BATCH_SIZE, report_batch_item_failures=True
                )
            )

        self.api = StudyApi(self, "Api", handler=functions[API.name])

        self.bucket = bucket
        self.queues = queues
        self.tables = tables
        self.functions = functions
        self.state_machine = workflow.state_machine
        self.gpu = gpu

    def _work_queue(self, resource: Resource) -> sqs.Queue:
        dead_letters = sqs.Queue(
            self,
            f"{resource}DeadLetters",
            retention_period=Duration.days(14),
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
        )
        return sqs.Queue(
            self,
            resource,
            visibility_timeout=Duration.seconds(QUEUE_VISIBILITY_TIMEOUT_S),
            dead_letter_queue=sqs.DeadLetterQueue(
                max_receive_count=QUEUE_MAX_RECEIVE_COUNT, queue=dead_letters
            ),
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
        )

    def _function(self, spec: FunctionSpec, layers: list[lambda_.LayerVersion]) -> lambda_.Function:
        common = {
            "architecture": lambda_.Architecture.X86_64,
            "description": spec.description,
            "memory_size": spec.memory_mb,
            "timeout": Duration.seconds(spec.timeout_s),
            "tracing": lambda_.Tracing.ACTIVE,
            "environment": {**POWERTOOLS_ENV, **{str(var): value for var, value in spec.settings.items()}},
        }
        function: lambda_.Function
        if spec.image:
            # Synthesis only stages the build context; the image is built at deploy time.
            function = lambda_.DockerImageFunction(
                self,
                spec.construct_id,
                code=lambda_.DockerImageCode.from_image_asset(
                    str(ROOT), file=f"{spec.code_dir}/Dockerfile", exclude=_IMAGE_CONTEXT_EXCLUDES
                ),
                **common,  # type: ignore[arg-type]
            )
        else:
            function = lambda_.Function(
                self,
                spec.construct_id,
                runtime=lambda_.Runtime.PYTHON_3_12,
                code=lambda_.Code.from_asset(str(ROOT / spec.code_dir), exclude=_ASSET_EXCLUDES),
                handler=spec.handler,
                layers=layers,
                **common,  # type: ignore[arg-type]
            )
        Tags.of(function).add(FUNCTION_TAG, spec.name)
        return function
