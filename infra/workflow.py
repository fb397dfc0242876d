"""The study state machine: Prepare, analyses stage by stage (Choice on runtime), Finalize; or MarkFailed."""

from __future__ import annotations

from collections.abc import Mapping

from aws_cdk import Duration
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_sqs as sqs
from aws_cdk import aws_stepfunctions as sfn
from aws_cdk import aws_stepfunctions_tasks as tasks
from constructs import Construct

from voxelpipe.function_specs import FINALIZE, MARK_FAILED, PREPARE, RUN_ANALYSIS, FunctionSpec
from voxelpipe.gpu_settings import GPU_RETRIED_ERRORS, GpuSettings
from voxelpipe.wiring import Runtime
from voxelpipe.workflow_settings import (
    ANALYSIS_CONCURRENCY,
    RETRY_ATTEMPTS,
    RETRY_BACKOFF,
    RETRY_INTERVAL_S,
    STATE_MACHINE_TIMEOUT_S,
    TRANSIENT_LAMBDA_ERRORS,
    task_timeout_s,
)

# Retry settings for transient Lambda errors (DESIGN: retry with backoff, catch the rest).
RETRY_INTERVAL = Duration.seconds(RETRY_INTERVAL_S)


class StudyWorkflow(Construct):
    """One Standard execution per study attempt."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        functions: Mapping[str, lambda_.IFunction],
        gpu_queue: sqs.IQueue,
        gpu: GpuSettings,
        log_group: logs.ILogGroup,
        retry_interval: Duration = RETRY_INTERVAL,
    ) -> None:
        super().__init__(scope, construct_id)

        def invoke(state_id: str, spec: FunctionSpec, result_path: str | None) -> tasks.LambdaInvoke:
            task = tasks.LambdaInvoke(
                self,
                state_id,
                lambda_function=functions[spec.name],
                payload_response_only=True,
                retry_on_service_exceptions=False,
                result_path=result_path,
                task_timeout=sfn.Timeout.duration(Duration.seconds(task_timeout_s(spec.timeout_s))),
            )
            task.add_retry(
                errors=list(TRANSIENT_LAMBDA_ERRORS),
                interval=retry_interval,
                max_attempts=RETRY_ATTEMPTS,
                backoff_rate=RETRY_BACKOFF,
            )
            return task

        mark_failed = invoke("MarkFailed", MARK_FAILED, result_path="$.marked")
        mark_failed.next(sfn.Fail(self, "StudyFailed", error="StudyFailed", cause="see the study's error"))

        prepare = invoke("Prepare", PREPARE, result_path="$.prepared")

        run_analysis = invoke("RunAnalysis", RUN_ANALYSIS, result_path=None)
        # A GPU analysis waits for a worker's answer to its task token (docs/gpu.md). A worker that
        # dies stops heartbeating: the task times out and the retry sends a new message, with a new
        # token, for another worker. SendMessage grants the state machine's role sqs:SendMessage.
        run_on_gpu = tasks.SqsSendMessage(
            self,
            "RunOnGpu",
            queue=gpu_queue,
            integration_pattern=sfn.IntegrationPattern.WAIT_FOR_TASK_TOKEN,
            message_body=sfn.TaskInput.from_object(
                {
                    "task_token": sfn.JsonPath.task_token,
                    "study_id": sfn.JsonPath.string_at("$.study_id"),
                    "attempt": sfn.JsonPath.number_at("$.attempt"),
                    "analysis": sfn.JsonPath.object_at("$.analysis"),
                    "volume": sfn.JsonPath.object_at("$.volume"),
                    "subject": sfn.JsonPath.object_at("$.subject"),
                }
            ),
            heartbeat_timeout=sfn.Timeout.duration(Duration.seconds(gpu.heartbeat_s)),
            task_timeout=sfn.Timeout.duration(Duration.seconds(gpu.task_timeout_s)),
        )
        run_on_gpu.add_retry(
            errors=list(GPU_RETRIED_ERRORS),
            interval=Duration.seconds(gpu.retry_interval_s),
            max_attempts=gpu.retry_attempts,
            backoff_rate=RETRY_BACKOFF,
        )
        by_runtime = (
            sfn.Choice(self, "ByRuntime")
            .when(sfn.Condition.string_equals("$.analysis.runtime", Runtime.LAMBDA.value), run_analysis)
            .when(sfn.Condition.string_equals("$.analysis.runtime", Runtime.GPU.value), run_on_gpu)
            .otherwise(
                sfn.Fail(
                    self,
                    "UnsupportedRuntime",
                    error="UnsupportedRuntime",
                    cause="this deployment has no worker for the analysis's runtime",
                )
            )
        )
        # Stages in order (each needs only earlier ones), the analyses of a stage in parallel.
        stage = sfn.Map(
            self,
            "RunStage",
            items_path="$.stage",
            item_selector={
                "study_id.$": "$.study_id",
                "attempt.$": "$.attempt",
                "analysis.$": "$$.Map.Item.Value",
                "volume.$": "$.volume",
                "subject.$": "$.subject",
            },
            max_concurrency=ANALYSIS_CONCURRENCY,
        )
        stage.item_processor(by_runtime)
        analyses = sfn.Map(
            self,
            "RunAnalyses",
            items_path="$.stages",
            item_selector={
                "study_id.$": "$.study_id",
                "attempt.$": "$.attempt",
                "stage.$": "$$.Map.Item.Value",
                "volume.$": "$.prepared",
                "subject.$": "$.subject",
            },
            max_concurrency=1,
            result_path="$.analysis_results",
        )
        analyses.item_processor(stage)

        finalize = invoke("Finalize", FINALIZE, result_path="$.finalized")
        for state in (prepare, analyses, finalize):
            state.add_catch(mark_failed, errors=["States.ALL"], result_path="$.error")

        definition = prepare.next(analyses).next(finalize).next(sfn.Succeed(self, "Done"))
        self.state_machine = sfn.StateMachine(
            self,
            "Resource",
            definition_body=sfn.DefinitionBody.from_chainable(definition),
            state_machine_type=sfn.StateMachineType.STANDARD,
            timeout=Duration.seconds(STATE_MACHINE_TIMEOUT_S),
            tracing_enabled=True,
            # Every event, without the states' input and output (study metadata stays out of logs).
            logs=sfn.LogOptions(destination=log_group, level=sfn.LogLevel.ALL, include_execution_data=False),
        )
