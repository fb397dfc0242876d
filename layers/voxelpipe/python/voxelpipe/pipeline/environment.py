"""The adapters entry points hand to the exam use cases, built from the function's environment
(ingest, the API's completion and STOW-RS routes, the completion sweep, the C-STORE receiver)."""

from __future__ import annotations

from voxelpipe.adapters.batches import DynamoBatchStore
from voxelpipe.adapters.queues import SqsWorkQueues
from voxelpipe.adapters.rule_sets import DynamoRuleSets
from voxelpipe.adapters.storage import Storage
from voxelpipe.adapters.study_table import DynamoStudyStore
from voxelpipe.adapters.transfers import DynamoTransferStore
from voxelpipe.limits import Limits
from voxelpipe.pipeline.batches import BatchAdapters
from voxelpipe.pipeline.lifecycle import ExamAdapters


def exam_adapters() -> ExamAdapters:
    return ExamAdapters(
        store=DynamoStudyStore(),
        storage=Storage.from_environment(),
        queues=SqsWorkQueues(),
        transfers=DynamoTransferStore(),
        rule_sets=DynamoRuleSets(),
        limits=Limits.from_environment(),
    )


def batch_adapters() -> BatchAdapters:
    return BatchAdapters(
        batches=DynamoBatchStore(),
        store=DynamoStudyStore(),
        storage=Storage.from_environment(),
        queues=SqsWorkQueues(),
    )
