"""The hostile-input corpus through the whole local cloud, every case at once.

Every case is uploaded before any is waited for, so their ingests, executions and analyses run
concurrently, as `voxelpipe demo` runs many `--input`s. Each must end terminal: a valid image
COMPLETED, anything else REJECTED with its reason code; none FAILED. `pytest -s` prints the count
of each outcome.
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import pytest

from infra.local.cloud import LocalCloud
from infra.local.studies import DEMO_TENANT, report, submit_files, wait_for_terminal
from tests.fixtures.cloud import checked_cloud
from tests.fixtures.hostile_corpus import HostileCase, hostile_corpus
from voxelpipe.keys import new_study_id
from voxelpipe.status import StudyStatus
from voxelpipe.wiring import EnvVar

CASES = hostile_corpus()
ANALYSES = ["qc"]  # the cheapest analysis: the corpus is about getting in, not about measuring
TERMINAL = {StudyStatus.COMPLETED, StudyStatus.REJECTED, StudyStatus.FAILED, StudyStatus.DELETED}


@dataclass(frozen=True)
class Outcome:
    status: str  # a StudyStatus, or NOT_INGESTED
    reason: str | None  # REJECTED: the reason code; FAILED: the error type
    detail: str | None

    @property
    def label(self) -> str:
        return f"{self.status}:{self.reason}" if self.reason else self.status


@dataclass(frozen=True)
class CorpusRun:
    outcomes: dict[str, Outcome]  # by case id
    crashes: list[str]  # handler errors other than a rejection found by decoding, "function: error"

    def counts(self) -> str:
        """How many cases ended each way, one line each, most common first."""
        counter = Counter(outcome.label for outcome in self.outcomes.values())
        return "\n".join(f"{count:4d}  {label}" for label, count in counter.most_common())


def _expected(case: HostileCase) -> tuple[str, str | None]:
    if case.valid:
        return StudyStatus.COMPLETED.value, None
    assert case.expected is not None
    return StudyStatus.REJECTED.value, case.expected.value


def _send(cloud: LocalCloud, case: HostileCase) -> str:
    """Register the case's study and upload its files, or (`direct`) put its one file straight into
    the bucket under its own name for a study nobody registered."""
    if not case.direct:
        return submit_files(cloud, list(case.files), input_format=case.input_format, analyses=ANALYSES)
    study_id = new_study_id()
    ((name, data),) = case.files
    boto3.client("s3").put_object(
        Bucket=cloud.bucket, Key=f"uploads/{DEMO_TENANT}/{study_id}/{name}", Body=data
    )
    return study_id


@pytest.fixture(scope="module")
def corpus_run(template: dict[str, Any]) -> Iterator[CorpusRun]:
    # moto logs each failed state with the whole state machine's repr: the outcomes say enough.
    quiet = logging.getLogger("moto.stepfunctions.parser")
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)
    try:
        yield _run_corpus(template)
    finally:
        quiet.setLevel(level)


def _run_corpus(template: dict[str, Any]) -> CorpusRun:
    with checked_cloud(template) as cloud:
        deployed_limit = os.environ[EnvVar.MAX_UPLOAD_BYTES]
        submitted: dict[str, HostileCase] = {}
        for case in CASES:
            # Ingest runs inside the upload here, so a case's own limit applies to it alone.
            os.environ[EnvVar.MAX_UPLOAD_BYTES] = str(case.max_upload_bytes or deployed_limit)
            try:
                study_id = _send(cloud, case)
            finally:
                os.environ[EnvVar.MAX_UPLOAD_BYTES] = deployed_limit
            submitted[study_id] = case
        records = wait_for_terminal(list(submitted), timeout_s=300)
        outcomes = {}
        for study_id, case in submitted.items():
            record = records[study_id]
            if record is None or record.status == StudyStatus.FAILED:
                # What `voxelpipe demo` would say of it: the error, or why nothing was ingested.
                summary = report(cloud, study_id, case.id)
                outcomes[case.id] = Outcome(summary.status, summary.reason, summary.detail)
            else:
                outcomes[case.id] = Outcome(record.status, record.reason, record.reason_detail)
        defective = [sid for sid, case in submitted.items() if case.known_defect]
        crashes = [
            f"{call.function}: {call.error}"
            for call in cloud.invocations
            if call.error
            and call.error != "StudyRejected"
            and not any(study_id in json.dumps(call.event) for study_id in defective)
        ]
    return CorpusRun(outcomes, crashes)


def test_every_case_ends_terminal_and_none_fails(corpus_run: CorpusRun):
    print(f"\n{len(CASES)} hostile-corpus cases, by outcome:\n{corpus_run.counts()}")
    stuck = {case_id: o.status for case_id, o in corpus_run.outcomes.items() if o.status not in TERMINAL}
    assert stuck == {}, f"not terminal:\n{corpus_run.counts()}"
    failed = {
        case.id: f"{corpus_run.outcomes[case.id].reason}: {corpus_run.outcomes[case.id].detail}"
        for case in CASES
        if corpus_run.outcomes[case.id].status == StudyStatus.FAILED and not case.known_defect
    }
    assert failed == {}, f"FAILED:\n{corpus_run.counts()}"
    assert corpus_run.crashes == [], f"handlers crashed:\n{corpus_run.counts()}"


def _param(case: HostileCase) -> Any:
    marks = [pytest.mark.xfail(strict=True, reason=case.known_defect)] if case.known_defect else []
    return pytest.param(case, id=case.id, marks=marks)


@pytest.mark.parametrize("case", [_param(case) for case in CASES])
def test_each_case_gets_its_outcome(corpus_run: CorpusRun, case: HostileCase):
    outcome = corpus_run.outcomes[case.id]
    assert (outcome.status, outcome.reason) == _expected(case), (
        f"{case.id} ({case.what}): {outcome.label} ({outcome.detail})\nall cases:\n{corpus_run.counts()}"
    )
