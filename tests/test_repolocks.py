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


def test_a_prune_waits_for_the_running_backup_and_a_new_backup_does_not_wait_for_it() -> None:
    locks = RepositoryLocks()
    order: list[str] = []
    backup = locks.shared("/repo")
    backup.__enter__()

    def prune() -> None:
        with locks.exclusive("/repo"):
            order.append("prune")

    def later_backup() -> None:
        with locks.shared("/repo"):
            order.append("later backup")

    pruning = _start(prune)
    time.sleep(0.2)
    assert order == []  # the prune waits for the backup
    _start(later_backup).join(5)
    assert order == ["later backup"]  # not held up behind the waiting prune
    backup.__exit__(None, None, None)
    pruning.join(5)
    assert order == ["later backup", "prune"]


def test_a_backup_waits_for_a_prune_under_way() -> None:
    locks = RepositoryLocks()
    entered = threading.Event()

    def backup() -> None:
        with locks.shared("/repo"):
            entered.set()

    with locks.exclusive("/repo"):
        _start(backup)
        assert not entered.wait(0.3)
    assert entered.wait(5)


def test_a_rotation_that_will_not_wait_is_told_the_repository_is_busy() -> None:
    locks = RepositoryLocks()
    with locks.shared("/repo"), locks.exclusive("/repo", wait=False) as held:
        assert held is False
    with locks.exclusive("/repo", wait=False) as held:
        assert held is True


def test_another_repository_is_not_held_up() -> None:
    locks = RepositoryLocks()
    with locks.exclusive("/repo"):
        entered = threading.Event()

        def other() -> None:
            with locks.shared("/other"):
                entered.set()

        _start(other)
        assert entered.wait(5)
