"""The GPU half of the stack (docs/gpu.md): the GPU queue, the Batch workers and their scaler.

The state machine sends each GPU task, with its task token, to the GPU queue; workers (AWS Batch
jobs on GPU instances, in a VPC of their own) long-poll it and answer the tokens; a scheduled
scaler Lambda submits worker jobs as the queue fills, none when it is empty.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from aws_cdk import Duration, Size, Stack
from aws_cdk import aws_batch as batch
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

from infra import nag
from infra.access import GPU_WORKER_BUCKET_ACCESS, GPU_WORKER_READ_ONLY_TABLES
from infra.security import StackSecurity, grant_bucket, grant_table
from voxelpipe.gpu_settings import GPU_QUEUE_MAX_RECEIVE_COUNT, GpuSettings
from voxelpipe.wiring import ENV_RESOURCES, EnvVar, Resource

# One worker job: one GPU and what a g5.xlarge/g6.xlarge leaves to a container.
WORKER_VCPUS = 4
WORKER_MEMORY = Size.gibibytes(14)
WORKER_GPUS = 1
SCALER_RATE = Duration.minutes(1)
GPU_FAMILY_PLACEHOLDER = "g5"


class GpuWorkers(Construct):
    """The GPU queue, the workers' VPC and Batch environment, the job definition and the scaler."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        settings: GpuSettings,
        security: StackSecurity,
        bucket: s3.IBucket,
        tables: Mapping[Resource, dynamodb.Table],
        event_bus: events.IEventBus,
        table_indexes: Mapping[Resource, Sequence[str]],
        worker_env_vars: Sequence[EnvVar],
        base_env: Mapping[str, str],
        image_context: Path,
        image_excludes: Sequence[str],
    ) -> None:
        super().__init__(scope, construct_id)
        self.settings = settings

        # Construct ids on the stack, so the template's logical ids start with the Resource names.
        self.queue = security.queue_with_dead_letters(
            scope,
            Resource.GPU_QUEUE,
            max_receive_count=GPU_QUEUE_MAX_RECEIVE_COUNT,
            visibility_timeout=Duration.seconds(settings.visibility_timeout_s),
            retention_period=Duration.days(4),
        )

        # Workers reach S3 through a gateway endpoint, SQS/Step Functions/ECR through a NAT.
        self.vpc = ec2.Vpc(
            self,
            "Vpc",
            max_azs=2,
            nat_gateways=1,
            subnet_configuration=[
                ec2.SubnetConfiguration(name="public", subnet_type=ec2.SubnetType.PUBLIC, cidr_mask=24),
                ec2.SubnetConfiguration(
                    name="workers", subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS, cidr_mask=20
                ),
            ],
            gateway_endpoints={
                "S3": ec2.GatewayVpcEndpointOptions(service=ec2.GatewayVpcEndpointAwsService.S3)
            },
            flow_logs={
                "FlowLogs": ec2.FlowLogOptions(
                    traffic_type=ec2.FlowLogTrafficType.ALL,
                    destination=ec2.FlowLogDestination.to_cloud_watch_logs(
                        security.log_group(self, "FlowLogsGroup")
                    ),
                )
            },
        )
        nag.acknowledge(self.vpc, *nag.GPU_PUBLIC_SUBNETS, nag.GPU_DEFAULT_SECURITY_GROUP)
        compute = batch.ManagedEc2EcsComputeEnvironment(
            self,
            "ComputeEnvironment",
            vpc=self.vpc,
            vpc_subnets=ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS),
            instance_types=[ec2.InstanceType(f"{GPU_FAMILY_PLACEHOLDER}.xlarge")],  # see the override below
            use_optimal_instance_classes=False,
            images=[batch.EcsMachineImage(image_type=batch.EcsMachineImageType.ECS_AL2_NVIDIA)],
            minv_cpus=0,  # scale to zero
            maxv_cpus=max(1, settings.max_workers) * WORKER_VCPUS,
        )
        # Batch takes families ("g5") as well as sizes ("g5.xlarge"); CDK's InstanceType only sizes.
        cfn_compute = compute.node.default_child
        assert isinstance(cfn_compute, batch.CfnComputeEnvironment)
        cfn_compute.add_property_override("ComputeResources.InstanceTypes", list(settings.instance_types))
        self.job_queue = batch.JobQueue(
            scope,
            Resource.GPU_JOB_QUEUE,
            compute_environments=[batch.OrderedComputeEnvironment(compute_environment=compute, order=1)],
        )

        # The worker may use exactly what it needs (infra/access.py): its prefixes of the bucket,
        # the status tables, the registry (read), the bus, its queue and (granted in
        # grant_task_responses) the state machine's task-token answers.
        self.job_role = iam.Role(self, "JobRole", assumed_by=iam.ServicePrincipal("ecs-tasks.amazonaws.com"))
        environment: dict[str, str] = {**base_env, **{str(k): v for k, v in settings.worker_env().items()}}
        for var in worker_env_vars:
            resource = ENV_RESOURCES.get(var)
            if resource is Resource.BUCKET:
                environment[var] = bucket.bucket_name
                grant_bucket(bucket, self.job_role, GPU_WORKER_BUCKET_ACCESS)
            elif resource is Resource.GPU_QUEUE:
                environment[var] = self.queue.queue_url
                self.queue.grant_consume_messages(self.job_role)
            elif resource is Resource.EVENT_BUS:
                environment[var] = event_bus.event_bus_name
                event_bus.grant_put_events_to(self.job_role)
            elif resource is not None and resource in tables:
                environment[var] = tables[resource].table_name
                grant_table(
                    tables[resource],
                    self.job_role,
                    write=resource not in GPU_WORKER_READ_ONLY_TABLES,
                    indexes=table_indexes.get(resource, []),
                )
            else:
                raise KeyError(f"the GPU worker is told of {var}, which infra/gpu.py does not wire")
        self.job_definition = batch.EcsJobDefinition(
            scope,
            Resource.GPU_JOB_DEFINITION,
            container=batch.EcsEc2ContainerDefinition(
                self,
                "WorkerContainer",
                # Synthesis only stages the build context; the image is built at deploy time.
                image=ecs.ContainerImage.from_asset(
                    str(image_context), file="functions/gpu_worker/Dockerfile", exclude=list(image_excludes)
                ),
                cpu=WORKER_VCPUS,
                memory=WORKER_MEMORY,
                gpu=WORKER_GPUS,
                environment=environment,
                job_role=self.job_role,
            ),
            # A job is a worker, not a task: tasks retry through the state machine, so a job
            # that dies is not resubmitted by Batch (the scaler starts another if work remains).
            retry_attempts=1,
            timeout=Duration.seconds(settings.job_timeout_s),
        )
        nag.acknowledge(self, nag.GPU_ROLES)
        stack = Stack.of(self)
        nag.acknowledge(
            self.job_definition.container.execution_role,
            nag.GPU_EXECUTION_ROLE,
            applies_to=[
                "Resource::*",
                nag.wildcard_resource(
                    f"arn:<AWS::Partition>:logs:{nag.region_of(stack)}:{nag.account_of(stack)}"
                    ":log-group:/aws/batch/job:*"
                ),
            ],
        )
        nag.acknowledge(compute, nag.GPU_INSTANCE_ROLE)

    def grant_task_responses(self, state_machine: sfn.StateMachine) -> None:
        """Workers answer the state machine's task tokens (success, failure, heartbeat)."""
        state_machine.grant_task_response(self.job_role)

    def wire_scaler(self, scaler: lambda_.Function) -> None:
        """The scaler reads the queue's depth, lists and submits worker jobs; EventBridge runs it."""
        scaler.add_environment(EnvVar.GPU_QUEUE_URL, self.queue.queue_url)
        scaler.add_environment(EnvVar.GPU_JOB_QUEUE, self.job_queue.job_queue_arn)
        scaler.add_environment(EnvVar.GPU_JOB_DEFINITION, self.job_definition.job_definition_arn)
        for var, value in self.settings.scaler_env().items():
            scaler.add_environment(var, value)
        self.queue.grant(scaler, "sqs:GetQueueAttributes")
        scaler.add_to_role_policy(
            iam.PolicyStatement(
                actions=["batch:SubmitJob"],
                resources=[self.job_queue.job_queue_arn, self.job_definition.job_definition_arn],
            )
        )
        # ListJobs has no resource-level permissions.
        scaler.add_to_role_policy(iam.PolicyStatement(actions=["batch:ListJobs"], resources=["*"]))
        nag.acknowledge(scaler.role or scaler, nag.LIST_JOBS, applies_to=["Resource::*"])
        events.Rule(
            self,
            "ScalerSchedule",
            schedule=events.Schedule.rate(SCALER_RATE),
            targets=[targets.LambdaFunction(scaler, retry_attempts=0)],
        )

    def wire_routing(self, functions: Iterable[lambda_.Function]) -> None:
        """Which catalogue analyses run on the GPU: dispatch routes them, the API lists them so."""
        for function in functions:
            for var, value in self.settings.routing_env().items():
                function.add_environment(var, value)
