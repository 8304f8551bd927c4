"""The daemon's lock per restic repository: backups share it, a prune has it alone."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from reconciler.repolocks import RepositoryLocks


def _start(target: Callable[[], object]) -> threading.Thread:
    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread


def test_backups_of_one_repository_share_its_lock() -> None:
    locks = RepositoryLocks()
    with locks.shared("/repo"):
        entered = threading.Event()

        def second() -> None:
            with locks.shared("/repo"):
                entered.set()

        _start(second)
        assert entered.wait(5)


def test_a_prune_waits_for_the_running_backup_and_backups_wait_for_the_prune() -> None:
    locks = RepositoryLocks()
    order: list[str] = []
    backup = locks.shared("/repo")
    backup.__enter__()

    def prune() -> None:
        with locks.exclusive("/repo"):
            order.append("prune")
            time.sleep(0.2)
            order.append("prune done")

    def later_backup() -> None:
        with locks.shared("/repo"):
            order.append("later backup")

    pruning = _start(prune)
    time.sleep(0.2)
    assert order == []  # the prune waits for the backup
    waiting = _start(later_backup)
    time.sleep(0.2)
    assert order == []  # a new backup waits behind the waiting prune
    backup.__exit__(None, None, None)
    pruning.join(5)
    waiting.join(5)
    assert order == ["prune", "prune done", "later backup"]


def test_another_repository_is_not_held_up() -> None:
    locks = RepositoryLocks()
    with locks.exclusive("/repo"):
        entered = threading.Event()

        def other() -> None:
            with locks.shared("/other"):
                entered.set()

        _start(other)
        assert entered.wait(5)


def test_a_thread_reading_goes_on_reading_past_a_waiting_prune() -> None:
    locks = RepositoryLocks()
    done = threading.Event()
    with locks.shared("/repo"):
        pruning = _start(lambda: locks.exclusive("/repo").__enter__())
        time.sleep(0.2)

        with locks.shared("/repo"):  # the same thread again: it must not wait for itself
            done.set()
    assert done.is_set()
    pruning.join(5)
    assert not pruning.is_alive()
