"""Which event a run sends to a stream, from the failure streak before it (pure logic)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from reconciler.models import NotificationEvent
from reconciler.streaks import event_to_send, failures_before
from reconciler.types import RunStatus

FAILURE, RECOVERY, SUCCESS = (
    NotificationEvent.FAILURE,
    NotificationEvent.RECOVERY,
    NotificationEvent.SUCCESS,
)
outcomes = st.lists(st.booleans(), max_size=40)  # True: a run succeeded, oldest first
choices = st.frozensets(st.sampled_from(list(NotificationEvent)))


def sent(
    history: list[bool], wanted: frozenset[NotificationEvent], repeat: bool
) -> list[NotificationEvent | None]:
    """The events a stream gets over `history`, each decided from the statuses before it, as
    the pipeline reads them from the state store (newest first)."""
    events: list[NotificationEvent | None] = []
    for index, successful in enumerate(history):
        previous = [
            RunStatus.SUCCESSFUL if earlier else RunStatus.FAILED
            for earlier in reversed(history[:index])
        ]
        events.append(event_to_send(successful, failures_before(previous), wanted, repeat))
    return events


def streaks(history: list[bool]) -> int:
    return sum(
        1
        for index, successful in enumerate(history)
        if not successful and (index == 0 or history[index - 1])
    )


@given(outcomes)
def test_a_streak_of_failures_sends_one_failure_without_repeat(history: list[bool]) -> None:
    events = sent(history, frozenset({FAILURE}), repeat=False)
    assert events.count(FAILURE) == streaks(history)


@given(outcomes)
def test_with_repeat_every_failure_is_sent(history: list[bool]) -> None:
    events = sent(history, frozenset({FAILURE}), repeat=True)
    assert events.count(FAILURE) == history.count(False)


@given(outcomes, st.booleans())
def test_a_recovery_is_sent_once_per_streak_that_ends(history: list[bool], repeat: bool) -> None:
    events = sent(history, frozenset({RECOVERY}), repeat)
    ended = sum(1 for index in range(1, len(history)) if history[index] and not history[index - 1])
    assert events.count(RECOVERY) == ended
    assert set(events) <= {RECOVERY, None}


@given(outcomes, st.booleans())
def test_a_stream_that_wants_every_success_gets_one_message_per_success(
    history: list[bool], repeat: bool
) -> None:
    events = sent(history, frozenset({SUCCESS}), repeat)
    assert sum(event in (SUCCESS, RECOVERY) for event in events) == history.count(True)


@given(outcomes, choices, st.booleans())
def test_a_stream_never_gets_what_it_did_not_ask_for(
    history: list[bool], wanted: frozenset[NotificationEvent], repeat: bool
) -> None:
    for event, successful in zip(sent(history, wanted, repeat), history, strict=True):
        if event is FAILURE:
            assert FAILURE in wanted
            assert not successful
        elif event is not None:
            assert successful
            assert wanted & {RECOVERY, SUCCESS}


@given(st.lists(st.sampled_from(list(RunStatus)), max_size=30))
def test_the_streak_counts_failures_back_to_the_newest_success(
    previous: list[RunStatus],
) -> None:
    count = failures_before(previous)
    newest_success = (
        previous.index(RunStatus.SUCCESSFUL) if RunStatus.SUCCESSFUL in previous else None
    )
    assert count == previous[:newest_success].count(RunStatus.FAILED)


def test_the_first_run_of_a_task_that_fails_starts_a_streak() -> None:
    assert event_to_send(False, failures_before([]), frozenset({FAILURE}), repeat=False) is FAILURE


def test_a_success_after_successes_is_no_recovery() -> None:
    assert event_to_send(True, 0, frozenset({RECOVERY}), repeat=False) is None
