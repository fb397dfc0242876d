"""The deploy pipeline: CDK Pipelines from a repository connection to a dev and a prod stage.

Source (CodeConnections) -> Synth (make layers, make test, cdk synth) -> self-update ->
Dev (VoxelpipeStack) -> manual approval -> Prod (VoxelpipeStack). Its settings come from the
`voxelpipe:pipeline` context object (docs/deploy.md); every stage's own context (GPU instance
types and limits, retention) is set on that stage, so dev and prod differ only there.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aws_cdk import CfnResource, Duration, Environment, RemovalPolicy, Stack, Stage, pipelines
from aws_cdk import aws_codebuild as codebuild
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from constructs import Construct

from infra import nag
from infra.security import encrypted_bucket, logical_id
from infra.stack import VoxelpipeStack

PIPELINE_CONTEXT = "voxelpipe:pipeline"
PIPELINE_STACK_NAME = "VoxelpipePipeline"
STACK_NAME = "Voxelpipe"
# What the synth step runs in CodeBuild (a clean checkout): the checks `make test` runs, then the
# cloud assembly. `make setup` creates the venv from pyproject's pins.
SYNTH_INSTALL_COMMANDS = ["npm install -g aws-cdk@2", "make setup"]
SYNTH_COMMANDS = ["make layers", "make test", "npx cdk synth"]
ARTIFACT_DAYS = 30


@dataclass(frozen=True)
class StageConfig:
    """One deployment of the stack: where, and the context that shapes it."""

    name: str
    account: str
    region: str
    context: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class PipelineConfig:
    connection_arn: str
    repository: str  # owner/name
    branch: str
    dev: StageConfig
    prod: StageConfig
    # Where the pipeline itself runs; the dev stage's account and region unless given.
    account: str
    region: str

    @classmethod
    def from_context(cls, value: Any) -> PipelineConfig | None:
        """The pipeline's settings, or None when no connection is configured (no pipeline)."""
        if not isinstance(value, dict) or not value.get("connectionArn"):
            return None
        missing = [key for key in ("repository", "branch", "stages") if not value.get(key)]
        if missing:
            raise ValueError(f"{PIPELINE_CONTEXT} lacks {', '.join(missing)} (docs/deploy.md)")

        def stage(name: str) -> StageConfig:
            found = value["stages"].get(name)
            if not isinstance(found, dict) or not found.get("account") or not found.get("region"):
                raise ValueError(f"{PIPELINE_CONTEXT}.stages.{name} needs an account and a region")
            return StageConfig(name, str(found["account"]), found["region"], dict(found.get("context", {})))

        dev, prod = stage("dev"), stage("prod")
        region = value.get("region", dev.region)
        # Another region would need CodePipeline's cross-region support stacks and their
        # replication buckets, which this pipeline does not harden: one region, any accounts.
        strays = [s.name for s in (dev, prod) if s.region != region]
        if strays:
            raise ValueError(f"{PIPELINE_CONTEXT}: stages {strays} must be in the pipeline's region {region}")
        return cls(
            connection_arn=value["connectionArn"],
            repository=value["repository"],
            branch=value["branch"],
            dev=dev,
            prod=prod,
            account=str(value.get("account", dev.account)),
            region=region,
        )


class VoxelpipeStage(Stage):
    """One environment: the whole VoxelpipeStack, with the stage's own context."""

    def __init__(self, scope: Construct, config: StageConfig, *, layers_dir: Path) -> None:
        super().__init__(
            scope, config.name.capitalize(), env=Environment(account=config.account, region=config.region)
        )
        for key, value in config.context.items():
            self.node.set_context(key, value)
        self.stack = VoxelpipeStack(self, STACK_NAME, layers_dir=layers_dir)


class PipelineStack(Stack):
    def __init__(
        self, scope: Construct, construct_id: str, *, config: PipelineConfig, layers_dir: Path
    ) -> None:
        super().__init__(scope, construct_id, env=Environment(account=config.account, region=config.region))
        source = pipelines.CodePipelineSource.connection(
            config.repository, config.branch, connection_arn=config.connection_arn
        )
        self.artifact_bucket = self._artifact_bucket()
        self.pipeline = pipelines.CodePipeline(
            self,
            "Pipeline",
            artifact_bucket=self.artifact_bucket,
            cross_account_keys=True,  # dev and prod may be other accounts
            enable_key_rotation=True,
            synth=pipelines.ShellStep(
                "Synth",
                input=source,
                install_commands=SYNTH_INSTALL_COMMANDS,
                commands=SYNTH_COMMANDS,
                primary_output_directory="cdk.out",
            ),
            code_build_defaults=pipelines.CodeBuildOptions(
                build_environment=codebuild.BuildEnvironment(
                    build_image=codebuild.LinuxBuildImage.STANDARD_7_0,
                    compute_type=codebuild.ComputeType.LARGE,
                ),
                timeout=Duration.minutes(60),
            ),
        )
        self.dev = VoxelpipeStage(self, config.dev, layers_dir=layers_dir)
        self.prod = VoxelpipeStage(self, config.prod, layers_dir=layers_dir)
        self.pipeline.add_stage(self.dev)
        self.pipeline.add_stage(
            self.prod,
            pre=[pipelines.ManualApprovalStep("PromoteToProd", comment="Promote the dev release to prod")],
        )
        # The CodePipeline and CodeBuild resources exist once the pipeline is built.
        self.pipeline.build_pipeline()
        self._acknowledge_generated()
        # cfn-lint's pipeline-action check (E3703) asks for Fn::Sub where CDK Pipelines writes the
        # deploy actions' partition-aware RoleArn as an Fn::Join: a style preference on a valid
        # value, so it is ignored on this one resource (the only cfn-lint exception).
        cfn_pipeline = self.pipeline.pipeline.node.default_child
        assert isinstance(cfn_pipeline, CfnResource)
        cfn_pipeline.add_metadata("cfn-lint", {"config": {"ignore_checks": ["E3703"]}})

    def _acknowledge_generated(self) -> None:
        """The findings on what CDK Pipelines generates, each wildcard named (nag.PIPELINE_*)."""
        region, account = nag.region_of(self), nag.account_of(self)
        projects = [self.pipeline.synth_project, self.pipeline.self_mutation_project]
        resources = [
            "*",
            f"<{logical_id(self.artifact_bucket)}.Arn>/*",
            f"arn:*:iam::{account}:role/*",
            f"arn:<AWS::Partition>:logs:{region}:{account}:log-group:/aws/codebuild/*",
            f"arn:<AWS::Partition>:codebuild:{region}:{account}:report-group/*",
        ]
        for project in projects:
            assert isinstance(project, Construct)
            project_id = logical_id(project)
            resources += [
                f"arn:<AWS::Partition>:logs:{region}:{account}:log-group:/aws/codebuild/<{project_id}>:*",
                f"arn:<AWS::Partition>:codebuild:{region}:{account}:report-group/<{project_id}>-*",
            ]
        actions = ["s3:GetObject*", "s3:GetBucket*", "s3:List*", "s3:DeleteObject*", "s3:Abort*"]
        actions += ["kms:ReEncrypt*", "kms:GenerateDataKey*"]
        roles_ack, inline_ack = nag.PIPELINE_GENERATED_ROLES
        nag.acknowledge(
            self.pipeline,
            roles_ack,
            applies_to=[nag.wildcard_resource(r) for r in resources] + [f"Action::{a}" for a in actions],
        )
        nag.acknowledge(self.pipeline, inline_ack, nag.PIPELINE_PROJECTS)

    def _artifact_bucket(self) -> s3.Bucket:
        """Pipeline artifacts (the cloud assembly, test output): KMS, TLS only, versioned, logged."""
        key = kms.Key(
            self,
            "ArtifactKey",
            description="voxelpipe pipeline: artifacts",
            enable_key_rotation=True,
            removal_policy=RemovalPolicy.DESTROY,
        )
        bucket = encrypted_bucket(
            self,
            "Artifacts",
            key=key,
            logs_id="ArtifactAccessLogs",
            logs_prefix="artifacts/",
            lifecycle_rules=[
                s3.LifecycleRule(
                    expiration=Duration.days(ARTIFACT_DAYS),
                    noncurrent_version_expiration=Duration.days(ARTIFACT_DAYS),
                )
            ],
        )
        nag.acknowledge(bucket, nag.ARTIFACT_BUCKET)
        return bucket
