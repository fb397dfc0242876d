"""RunAnalysis Lambda (state machine Map item): one Lambda-runtime analysis of a study."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.parser import event_parser
from aws_lambda_powertools.utilities.typing import LambdaContext

from voxelpipe.adapters.storage import Storage
from voxelpipe.adapters.study_table import DynamoStudyStore
from voxelpipe.messages import AnalysisTask
from voxelpipe.observability import logger, metrics, tracer
from voxelpipe.pipeline.analysis import run_analysis


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
@event_parser(model=AnalysisTask)
def lambda_handler(event: AnalysisTask, context: LambdaContext) -> dict[str, Any]:
    return run_analysis(event, DynamoStudyStore(), Storage.from_environment()).model_dump()
