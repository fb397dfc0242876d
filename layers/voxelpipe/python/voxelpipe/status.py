"""The study and task state machines as data: which status may follow which."""

from __future__ import annotations

from enum import StrEnum


class StudyStatus(StrEnum):
    AWAITING_UPLOAD = "AWAITING_UPLOAD"
    VALIDATING = "VALIDATING"
    VALIDATED = "VALIDATED"
    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    REJECTED = "REJECTED"
    DELETED = "DELETED"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_STATUSES


TERMINAL_STATUSES = frozenset(
    {StudyStatus.COMPLETED, StudyStatus.FAILED, StudyStatus.REJECTED, StudyStatus.DELETED}
)
_ACTIVE = frozenset(StudyStatus) - TERMINAL_STATUSES

# Statuses a study may move to each status from, within one attempt. Transitions only go
# forward; a repeated transition to the status a study already has is allowed, so that a
# retried step is a no-op rather than an error.
_PREDECESSORS: dict[StudyStatus, frozenset[StudyStatus]] = {
    StudyStatus.AWAITING_UPLOAD: frozenset(),
    StudyStatus.VALIDATING: frozenset({StudyStatus.AWAITING_UPLOAD}),
    StudyStatus.VALIDATED: frozenset({StudyStatus.VALIDATING}),
    StudyStatus.QUEUED: frozenset({StudyStatus.VALIDATED}),
    StudyStatus.RUNNING: frozenset({StudyStatus.QUEUED}),
    StudyStatus.COMPLETED: frozenset({StudyStatus.RUNNING}),
    # RUNNING too: a DICOM series whose pixels cannot be decoded shows it only in Prepare.
    StudyStatus.REJECTED: frozenset(
        {StudyStatus.AWAITING_UPLOAD, StudyStatus.VALIDATING, StudyStatus.VALIDATED, StudyStatus.RUNNING}
    ),
    StudyStatus.FAILED: _ACTIVE,
    StudyStatus.DELETED: frozenset(StudyStatus) - {StudyStatus.DELETED},
}


def allowed_sources(target: StudyStatus) -> frozenset[StudyStatus]:
    """Every status from which a study may reach `target` in the same attempt (itself included)."""
    return _PREDECESSORS[target] | {target}


def can_transition(source: StudyStatus, target: StudyStatus) -> bool:
    return source in allowed_sources(target)


class TaskStatus(StrEnum):
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
