import itertools

from voxelpipe.status import TERMINAL_STATUSES, StudyStatus, allowed_sources, can_transition

HAPPY_PATH = [
    StudyStatus.AWAITING_UPLOAD,
    StudyStatus.VALIDATING,
    StudyStatus.VALIDATED,
    StudyStatus.QUEUED,
    StudyStatus.RUNNING,
    StudyStatus.COMPLETED,
]


def test_happy_path_moves_forward_one_step_at_a_time():
    for source, target in itertools.pairwise(HAPPY_PATH):
        assert can_transition(source, target)
    for index, target in enumerate(HAPPY_PATH):
        for later in HAPPY_PATH[index + 1 :]:
            assert not can_transition(later, target), f"{later} -> {target} goes backwards"


def test_terminal_statuses_are_final_except_deletion():
    for terminal in TERMINAL_STATUSES:
        for target in StudyStatus:
            if target in (terminal, StudyStatus.DELETED):
                continue
            assert not can_transition(terminal, target), f"{terminal} -> {target}"
        assert can_transition(terminal, StudyStatus.DELETED) or terminal is StudyStatus.DELETED


def test_rejection_only_before_results():
    assert allowed_sources(StudyStatus.REJECTED) == {
        StudyStatus.AWAITING_UPLOAD,
        StudyStatus.VALIDATING,
        StudyStatus.VALIDATED,
        StudyStatus.RUNNING,  # a series that cannot be decoded is found in Prepare
        StudyStatus.REJECTED,
    }
    assert not can_transition(StudyStatus.QUEUED, StudyStatus.REJECTED)
    assert not can_transition(StudyStatus.COMPLETED, StudyStatus.REJECTED)


def test_any_active_status_can_fail_and_repeats_are_noops():
    for status in StudyStatus:
        if not status.is_terminal:
            assert can_transition(status, StudyStatus.FAILED)
        assert can_transition(status, status)
