"""The DICOM C-STORE receiver (docs/dicom-receiver.md): an ECS Fargate service in the stack's VPC
behind a Network Load Balancer.

The tasks run in the private subnets with no public address; the NLB is internal (reached from the
VPC, a peered hospital network or a VPN) unless `voxelpipe:dicomInternetFacing` is true. Its
listener is TLS (DICOM TLS, terminated at the NLB with an ACM certificate) when
`voxelpipe:dicomTls` names the certificate's ARN, plain TCP otherwise. The receiver runs once
`voxelpipe:dicomAeTitles` maps at least one AE title to a tenant; without it the service is there
with no task. The task role may do exactly what infra/access.py declares.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aws_cdk import CfnOutput, Duration, Stack, Tags
from aws_cdk import aws_certificatemanager as acm
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_elasticloadbalancingv2 as elbv2
from aws_cdk import aws_events as events
from aws_cdk import aws_iam as iam
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_secretsmanager as secretsmanager
from constructs import Construct, Node

from infra import nag
from infra.access import DICOM_RECEIVER_BUCKET_ACCESS, DICOM_RECEIVER_READ_ONLY_TABLES
from infra.security import StackSecurity, access_logs_bucket, grant_bucket, grant_table
from voxelpipe.dimse.settings import DEFAULT_PORT, parse_ae_titles
from voxelpipe.function_specs import ServiceSpec
from voxelpipe.wiring import ENV_RESOURCES, FUNCTION_TAG, EnvVar, Resource

# CDK context keys (docs/deploy.md, docs/dicom-receiver.md).
AE_TITLES_CONTEXT = "voxelpipe:dicomAeTitles"  # {"AE": "tenant"} or {"AE": {"tenant", "calling"}}
PORT_CONTEXT = "voxelpipe:dicomPort"  # the NLB listener's port (default 11112)
TLS_CONTEXT = "voxelpipe:dicomTls"  # an ACM certificate ARN: the listener is TLS
INTERNET_FACING_CONTEXT = "voxelpipe:dicomInternetFacing"  # default false: internal
TASKS_CONTEXT = "voxelpipe:dicomTasks"  # tasks running once AE titles are given (default 1)
# A TLS policy of TLS 1.2 and 1.3 only, with forward secrecy.
TLS_POLICY = elbv2.SslPolicy.RECOMMENDED_TLS


@dataclass(frozen=True)
class DicomReceiverSettings:
    """What shapes the receiver's deployment, from CDK context, checked at synthesis."""

    ae_titles: dict[str, Any]
    port: int = DEFAULT_PORT
    certificate_arn: str | None = None
    internet_facing: bool = False
    tasks: int = 1

    @classmethod
    def from_context(cls, node: Node) -> DicomReceiverSettings:
        titles = node.try_get_context(AE_TITLES_CONTEXT) or {}
        if isinstance(titles, str):
            titles = json.loads(titles)
        if titles:
            parse_ae_titles(titles, where=AE_TITLES_CONTEXT)  # refused at synthesis, with the reason
        port = int(node.try_get_context(PORT_CONTEXT) or DEFAULT_PORT)
        if not 0 < port < 65536:
            raise ValueError(f"{PORT_CONTEXT}: a TCP port, 1-65535: {port}")
        certificate = node.try_get_context(TLS_CONTEXT) or None
        if certificate is not None and not str(certificate).startswith("arn:"):
            raise ValueError(f"{TLS_CONTEXT}: an ACM certificate ARN, not {certificate!r}")
        internet_facing = node.try_get_context(INTERNET_FACING_CONTEXT) in (True, "true", "True", "1")
        if internet_facing and certificate is None:
            raise ValueError(
                f"{INTERNET_FACING_CONTEXT}: a receiver on the internet needs TLS: set {TLS_CONTEXT}"
            )
        tasks = int(node.try_get_context(TASKS_CONTEXT) or 1)
        return cls(
            ae_titles=dict(titles),
            port=port,
            certificate_arn=certificate,
            internet_facing=internet_facing,
            tasks=tasks if titles else 0,
        )


class DicomReceiver(Construct):
    """The receiver's cluster, task definition, service, security group and load balancer."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        spec: ServiceSpec,
        settings: DicomReceiverSettings,
        vpc: ec2.IVpc,
        security: StackSecurity,
        bucket: s3.IBucket,
        tables: Mapping[Resource, dynamodb.Table],
        table_indexes: Mapping[Resource, Sequence[str]],
        event_bus: events.IEventBus,
        pseudonym_secret: secretsmanager.ISecret,
        base_env: Mapping[str, str],
        image_context: Path,
        image_excludes: Sequence[str],
    ) -> None:
        super().__init__(scope, construct_id)
        # The container listens on the same port as the listener: one number to think of.
        container_port = settings.port
        self.task_role = iam.Role(
            self, "TaskRole", assumed_by=iam.ServicePrincipal("ecs-tasks.amazonaws.com")
        )
        environment: dict[str, str] = {
            **base_env,
            **{str(var): value for var, value in spec.settings.items()},
            EnvVar.DICOM_AE_TITLES: json.dumps(settings.ae_titles),
            EnvVar.DICOM_PORT: str(container_port),
        }
        # Grants follow the environment, as for the functions (infra/stack.py).
        for var in spec.env:
            resource = ENV_RESOURCES.get(var)
            if resource is Resource.BUCKET:
                environment[var] = bucket.bucket_name
                grant_bucket(bucket, self.task_role, DICOM_RECEIVER_BUCKET_ACCESS)
            elif resource is Resource.PSEUDONYM_SECRET:  # exam study ids (PSEUDONYM_SECRET_READERS)
                environment[var] = pseudonym_secret.secret_arn
                pseudonym_secret.grant_read(self.task_role)
            elif resource is Resource.EVENT_BUS:
                environment[var] = event_bus.event_bus_name
                event_bus.grant_put_events_to(self.task_role)
            elif resource is not None and resource in tables:
                environment[var] = tables[resource].table_name
                grant_table(
                    tables[resource],
                    self.task_role,
                    write=resource not in DICOM_RECEIVER_READ_ONLY_TABLES,
                    indexes=table_indexes.get(resource, []),
                )
            else:
                raise KeyError(
                    f"the DICOM receiver is told of {var}, which infra/dicom_receiver.py does not wire"
                )

        self.cluster = ecs.Cluster(
            self, "Cluster", vpc=vpc, container_insights_v2=ecs.ContainerInsights.ENABLED
        )
        task = ecs.FargateTaskDefinition(
            self, "Task", cpu=spec.cpu, memory_limit_mib=spec.memory_mb, task_role=self.task_role
        )
        task.add_container(
            "Receiver",
            # Synthesis only stages the build context; the image is built at deploy time.
            image=ecs.ContainerImage.from_asset(
                str(image_context), file=f"{spec.code_dir}/Dockerfile", exclude=list(image_excludes)
            ),
            environment=environment,
            logging=ecs.LogDrivers.aws_logs(
                stream_prefix="dicom-receiver", log_group=security.log_group(self, "Logs")
            ),
            port_mappings=[ecs.PortMapping(container_port=container_port, protocol=ecs.Protocol.TCP)],
            readonly_root_filesystem=True,
        )
        self.task_definition = task
        # The local cloud finds the receiver's environment and role by this tag (infra/local/deploy.py).
        Tags.of(task).add(FUNCTION_TAG, spec.name)

        # Only the load balancer reaches the tasks: it sits in the VPC, and with IP targets it
        # connects from its own private addresses, so the VPC's range is the only source needed.
        self.security_group = ec2.SecurityGroup(
            self, "TaskSecurityGroup", vpc=vpc, description="DICOM receiver tasks: DICOM from the VPC only"
        )
        self.security_group.add_ingress_rule(
            ec2.Peer.ipv4(vpc.vpc_cidr_block), ec2.Port.tcp(container_port), "DICOM from the NLB"
        )
        self.service = ecs.FargateService(
            self,
            "Service",
            cluster=self.cluster,
            task_definition=task,
            desired_count=settings.tasks,
            assign_public_ip=False,
            vpc_subnets=ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS),
            security_groups=[self.security_group],
            circuit_breaker=ecs.DeploymentCircuitBreaker(rollback=True),
            min_healthy_percent=100,
        )

        self.load_balancer = elbv2.NetworkLoadBalancer(
            self,
            "LoadBalancer",
            vpc=vpc,
            internet_facing=settings.internet_facing,
            vpc_subnets=ec2.SubnetSelection(
                subnet_type=ec2.SubnetType.PUBLIC
                if settings.internet_facing
                else ec2.SubnetType.PRIVATE_WITH_EGRESS
            ),
            cross_zone_enabled=True,
        )
        self._log_access(access_logs_bucket(self, "LoadBalancerLogs"))
        if settings.certificate_arn:
            listener = self.load_balancer.add_listener(
                "Listener",
                port=settings.port,
                protocol=elbv2.Protocol.TLS,
                certificates=[
                    elbv2.ListenerCertificate.from_certificate_manager(
                        acm.Certificate.from_certificate_arn(self, "Certificate", settings.certificate_arn)
                    )
                ],
                ssl_policy=TLS_POLICY,
            )
        else:
            listener = self.load_balancer.add_listener(
                "Listener", port=settings.port, protocol=elbv2.Protocol.TCP
            )
        listener.add_targets(
            "Receivers",
            port=container_port,
            protocol=elbv2.Protocol.TCP,
            targets=[
                self.service.load_balancer_target(container_name="Receiver", container_port=container_port)
            ],
            # A TCP connect is the health check: the receiver closes it like any silent connection.
            health_check=elbv2.HealthCheck(protocol=elbv2.Protocol.TCP, interval=Duration.seconds(30)),
            # Associations in flight get time to finish when a task is replaced.
            deregistration_delay=Duration.seconds(60),
        )

        # Where PACS send to: the load balancer's DNS name and the port (docs/dicom-receiver.md).
        CfnOutput(
            self,
            "DicomEndpoint",
            value=f"{self.load_balancer.load_balancer_dns_name}:{settings.port}",
            description="The DICOM C-STORE receiver: host:port for the PACS",
        )
        nag.acknowledge(task, nag.RECEIVER_ENVIRONMENT)
        nag.acknowledge(self, nag.RECEIVER_ROLES)
        if task.execution_role is not None:
            nag.acknowledge(task.execution_role, nag.RECEIVER_EXECUTION_ROLE, applies_to=["Resource::*"])
        nag.acknowledge(self.load_balancer, nag.RECEIVER_DELETION_PROTECTION)
        nag.acknowledge(self.security_group, *nag.RECEIVER_INGRESS)
        if not settings.certificate_arn:
            nag.acknowledge(listener, nag.RECEIVER_PLAIN_DICOM)

    def _log_access(self, bucket: s3.Bucket) -> None:
        """The NLB's access logs (its TLS connections) to `bucket`, delivered by the log delivery
        service. Set by hand: CDK's log_access_logs needs the stack's region at synthesis, and the
        stack is region-agnostic."""
        prefix = "dicom-receiver"
        delivery = iam.ServicePrincipal("delivery.logs.amazonaws.com")
        account = Stack.of(self).account
        bucket.add_to_resource_policy(
            iam.PolicyStatement(
                principals=[delivery],
                actions=["s3:PutObject"],
                resources=[bucket.arn_for_objects(f"{prefix}/AWSLogs/{account}/*")],
                conditions={"StringEquals": {"s3:x-amz-acl": "bucket-owner-full-control"}},
            )
        )
        bucket.add_to_resource_policy(
            iam.PolicyStatement(
                principals=[delivery], actions=["s3:GetBucketAcl"], resources=[bucket.bucket_arn]
            )
        )
        for key, value in {
            "access_logs.s3.enabled": "true",
            "access_logs.s3.bucket": bucket.bucket_name,
            "access_logs.s3.prefix": prefix,
        }.items():
            self.load_balancer.set_attribute(key, value)
        if bucket.policy is not None:
            self.load_balancer.node.add_dependency(bucket.policy)
