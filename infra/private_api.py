"""The private network mode (docs/security.md, "Network modes"): interface VPC endpoints through
which the REST API and the bucket's presigned URLs are reached, for deployments that must not be
reachable from the internet (`voxelpipe:network:apiEndpoint: private`).

- **execute-api**: the REST API becomes a PRIVATE endpoint whose resource policy admits requests
  through this endpoint only (aws:SourceVpce); the API is associated with the endpoint, so clients
  call `https://{api-id}-{vpce-id}.execute-api.{region}.amazonaws.com/v1/`, a public DNS name that
  resolves to the endpoint's private addresses (no DNS forwarding needed on premises).
- **S3**: presigned uploads and downloads go to `https://bucket.{vpce-id}.s3.{region}.vpce.amazonaws.com`
  (the API's presigner is told so by EnvVar.S3_PUBLIC_ENDPOINT), and the bucket refuses presigned
  requests (query-string or POST form signatures) arriving any other way.

Both endpoints sit in the stack's VPC (the GPU workers', which the DICOM receiver and egress use)
with private DNS off, so the VPC's own traffic to S3 (its gateway endpoint) and to other
execute-api endpoints is unchanged. Clients reach them over a VPN, Direct Connect, peering or a
transit gateway into that VPC; `voxelpipe:network:clientCidrs` names their networks.
"""

from __future__ import annotations

from aws_cdk import Aws, CfnOutput, Fn
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_s3 as s3
from constructs import Construct

from infra import nag
from infra.identity_settings import NetworkSettings

HTTPS = 443
# What S3's s3:authType condition calls the two presigned forms (and the plain header one, REST-HEADER).
PRESIGNED_AUTH_TYPES = ("REST-QUERY-STRING", "POST")


class PrivateEndpoints(Construct):
    """The execute-api and S3 interface endpoints, their security group, and the bucket's rule."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        vpc: ec2.IVpc,
        settings: NetworkSettings,
        bucket: s3.Bucket,
    ) -> None:
        super().__init__(scope, construct_id)
        self.security_group = ec2.SecurityGroup(
            self,
            "EndpointsSecurityGroup",
            vpc=vpc,
            description="voxelpipe private API and S3 endpoints: HTTPS from the VPC and the client networks",
            allow_all_outbound=False,
        )
        self.security_group.add_ingress_rule(
            ec2.Peer.ipv4(vpc.vpc_cidr_block), ec2.Port.tcp(HTTPS), "the VPC"
        )
        for cidr in settings.client_cidrs:
            self.security_group.add_ingress_rule(ec2.Peer.ipv4(cidr), ec2.Port.tcp(HTTPS), "a client network")
        nag.acknowledge(self.security_group, *nag.PRIVATE_ENDPOINTS_INGRESS)
        subnets = ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS)
        self.execute_api = ec2.InterfaceVpcEndpoint(
            self,
            "ExecuteApi",
            vpc=vpc,
            service=ec2.InterfaceVpcEndpointAwsService.APIGATEWAY,
            subnets=subnets,
            security_groups=[self.security_group],
            open=False,
            private_dns_enabled=False,
        )
        self.s3 = ec2.InterfaceVpcEndpoint(
            self,
            "S3",
            vpc=vpc,
            service=ec2.InterfaceVpcEndpointAwsService.S3,
            subnets=subnets,
            security_groups=[self.security_group],
            open=False,
            private_dns_enabled=False,
        )
        # A leaked presigned URL is of no use from outside: presigned requests must come through
        # the endpoint. Functions sign their own requests with headers (REST-HEADER): unaffected.
        bucket.add_to_resource_policy(
            iam.PolicyStatement(
                sid="PresignedRequestsOnlyThroughTheS3Endpoint",
                effect=iam.Effect.DENY,
                principals=[iam.AnyPrincipal()],
                actions=["s3:GetObject", "s3:PutObject"],
                resources=[bucket.arn_for_objects("*")],
                conditions={
                    "StringEquals": {"s3:authType": list(PRESIGNED_AUTH_TYPES)},
                    "StringNotEquals": {"aws:SourceVpce": self.s3.vpc_endpoint_id},
                },
            )
        )
        CfnOutput(self, "S3EndpointUrl", value=self.s3_endpoint_url)

    @property
    def s3_endpoint_url(self) -> str:
        """`https://bucket.{vpce-id}.s3.{region}.vpce.amazonaws.com`: the endpoint-specific name for
        bucket requests, from the endpoint's regional DNS entry
        `{zone}:*.{vpce-id}.s3.{region}.vpce.amazonaws.com`."""
        name = Fn.select(1, Fn.split(":", Fn.select(0, self.s3.vpc_endpoint_dns_entries)))
        return Fn.join("", ["https://bucket.vpce-", Fn.select(1, Fn.split("vpce-", name))])

    def api_policy(self) -> iam.PolicyDocument:
        """The private REST API's resource policy: invocations through this endpoint only."""
        return iam.PolicyDocument(
            statements=[
                iam.PolicyStatement(
                    effect=iam.Effect.DENY,
                    principals=[iam.AnyPrincipal()],
                    actions=["execute-api:Invoke"],
                    resources=["execute-api:/*"],
                    conditions={"StringNotEquals": {"aws:SourceVpce": self.execute_api.vpc_endpoint_id}},
                ),
                iam.PolicyStatement(
                    effect=iam.Effect.ALLOW,
                    principals=[iam.AnyPrincipal()],
                    actions=["execute-api:Invoke"],
                    resources=["execute-api:/*"],
                ),
            ]
        )

    def api_url(self, rest_api_id: str, stage: str) -> str:
        """The private API's URL through the endpoint: `https://{api}-{vpce}.execute-api.{region}.{suffix}/{stage}/`."""
        return Fn.join(
            "",
            [
                "https://",
                rest_api_id,
                "-",
                self.execute_api.vpc_endpoint_id,
                ".execute-api.",
                Aws.REGION,
                ".",
                Aws.URL_SUFFIX,
                f"/{stage}/",
            ],
        )
