"""When a network exam is complete: no sender declares it, so completion is decided, never guessed.

An exam whose instances arrived by STOW-RS or C-STORE (or a series routed to a study of its own)
is complete when (1) every transfer that carried its instances has ended (the request, or the
association: released, aborted or closed; the transfers table counts those still open), (2) no
new instance arrived for the tenant's quiet period (its rule set's `quiet_period_seconds`; none
for routed copies), and (3) ingest has checked every object written (`arrived` has caught up with
`received`). A transfer that never says it ended
(a receiver that died) counts as ended once nothing arrived for `STALE_TRANSFER_S`.

Instances that arrive after the exam ended open a new attempt of it, which waits for them like the
first; while an attempt runs they wait for it to end. Nothing is dropped.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from voxelpipe import tracking
from voxelpipe.observability import logger
from voxelpipe.pipeline.attempts import record_ended_attempt
from voxelpipe.pipeline.exams import complete_dicom_study
from voxelpipe.pipeline.lifecycle import ExamAdapters, IngestOutcome
from voxelpipe.pipeline.receive import TransferSource
from voxelpipe.records import TransferRecord
from voxelpipe.status import StudyStatus

# Longer than any transfer can go without an instance: the C-STORE receiver's idle timeout and
# API Gateway's 29 s request limit are both far shorter.
STALE_TRANSFER_S = 600


def transfer_is_over(transfer: TransferRecord, now: datetime, quiet_period_s: float) -> bool:
    """Every transfer of the exam ended (or went stale) and the quiet period has passed."""
    idle = now - transfer.last_received_at
    ended = transfer.ended_at is not None and int(transfer.open_transfers) <= 0
    wait = quiet_period_s if ended else max(quiet_period_s, STALE_TRANSFER_S)
    return idle >= timedelta(seconds=wait)


def complete_if_over(study_id: str, exam: ExamAdapters, *, source: str) -> IngestOutcome | None:
    """Complete the study's pending transfer if it is over: None when there is none, or not yet."""
    transfer = exam.transfers.get_transfer(study_id)
    if transfer is None:
        return None
    now = tracking.now()
    if not transfer_is_over(transfer, now, 0):
        # Not over even without a quiet period: ingest calls this for every instance of an open
        # transfer, which need not read the study or the rule set to know it.
        return None
    study = exam.store.get_study(study_id)
    if study is None or study.status == StudyStatus.DELETED:
        exam.transfers.settle(transfer)  # nothing to hand them to: the deletion removed them
        return None
    quiet = (
        0
        if transfer.source == TransferSource.ROUTED
        else exam.rule_sets.current(study.tenant).rule_set.quiet_period_seconds
    )
    if not transfer_is_over(transfer, now, quiet) or int(study.arrived) < int(study.received):
        return None
    status = StudyStatus(study.status)
    if status in tracking.REOPENABLE_FOR_INSTANCES:
        # Instances after the end: a new attempt takes them (with everything the exam had). The
        # ended attempt's record is kept; its outputs move when the new attempt's Prepare starts.
        record_ended_attempt(exam.store, study)
        try:
            study = tracking.open_attempt(exam.store, study_id, int(study.attempt), awaiting_instances=True)
        except tracking.TransitionRefused:
            return None  # another sweep opened it
        tracking.audit(
            exam.store,
            study_id,
            "instances_after_end",
            actor="ingest",
            source=source,
            detail={"attempt": int(study.attempt)},
        )
    elif status != StudyStatus.AWAITING_UPLOAD:
        return None  # an attempt is under way: the new instances wait for it to end
    outcome = complete_dicom_study(study_id, exam, source=source)
    # Settled after: should completing fail, the record stays for the next sweep (after the reaper
    # has failed a study stuck in validation, it opens a new attempt). An instance that arrived
    # meanwhile keeps it too: the attempt that just started did not see it, the next one will.
    exam.transfers.settle(transfer)
    return outcome


def complete_transfers(exam: ExamAdapters) -> list[IngestOutcome]:
    """The scheduled sweep: complete every pending exam whose transfers are over."""
    outcomes = []
    for transfer in exam.transfers.pending_transfers():
        try:
            outcome = complete_if_over(transfer.study_id, exam, source=f"transfer:{transfer.source}")
        except Exception:  # one exam's trouble never holds the others back; the next sweep retries
            logger.exception("exam completion failed", extra={"study_id": transfer.study_id})
            continue
        if outcome is not None:
            outcomes.append(outcome)
    return outcomes
