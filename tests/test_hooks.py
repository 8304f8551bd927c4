"""Hooks around a run, on the real sshd: `before` hooks gate the backup, `after` hooks run
whatever happened and read the result, their output is in the run log, and their text reaches
`sh -c` verbatim under every login shell."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.models import Hooks, ResolvedTask
from reconciler.types import RunStatus
from tests.runs import Harness, files_task
from tests.servers import ShellLogin, SshServer, owned_directory, shell_user


def source_tree(root: Path) -> Path:
    source = root / "data"
    source.mkdir()
    (source / "file.txt").write_text("kept\n")
    return source


def run(harness: Harness, task: ResolvedTask) -> tuple[RunStatus, str, list[str]]:
    status = harness.run(task)
    record = harness.state.runs.latest_run(task.id)
    assert record is not None
    lines, _ = harness.state.runs.log_after(record.id, 0)
    return status, record.reason or "", [line.partition(" ")[2] for line in lines]


def hooked(sshd: SshServer, tmp_path: Path, source: Path, **hooks: object) -> ResolvedTask:
    return files_task(sshd, tmp_path / "dest", source, hooks=Hooks.model_validate(hooks))


def stored(tmp_path: Path) -> list[Path]:
    dest = tmp_path / "dest"
    return [path for path in dest.rglob("*") if path.is_file()] if dest.exists() else []


def test_a_before_hook_runs_and_its_output_is_in_the_log(sshd: SshServer, tmp_path: Path) -> None:
    task = hooked(sshd, tmp_path, source_tree(tmp_path), before=["echo out; echo err >&2"])

    status, reason, lines = run(Harness(tmp_path), task)

    assert status is RunStatus.SUCCESSFUL, reason
    assert "before hook 1: out" in lines
    assert "before hook 1: err" in lines
    assert len(stored(tmp_path)) == 1


def test_a_failing_before_hook_fails_the_run_and_nothing_is_stored(
    sshd: SshServer, tmp_path: Path
) -> None:
    task = hooked(sshd, tmp_path, source_tree(tmp_path), before=["echo no way; exit 3", "true"])

    status, reason, lines = run(Harness(tmp_path), task)

    assert status is RunStatus.FAILED
    assert reason == (
        "before hook 1 (echo no way; exit 3) exited with 3: no way, so no backup was taken"
    )
    assert not any(line.startswith("before hook 2") for line in lines)
    assert stored(tmp_path) == []


def test_a_before_hook_that_outlasts_its_timeout_fails_the_run(
    sshd: SshServer, tmp_path: Path
) -> None:
    task = hooked(sshd, tmp_path, source_tree(tmp_path), before=["sleep 30"], timeout=1)

    status, reason, _ = run(Harness(tmp_path), task)

    assert status is RunStatus.FAILED
    assert "did not finish within its timeout of 1 s" in reason
    assert stored(tmp_path) == []


def test_an_after_hook_sees_success(sshd: SshServer, tmp_path: Path) -> None:
    after = ['echo "result=$RECONCILER_RESULT task=$RECONCILER_TASK_ID"']
    task = hooked(sshd, tmp_path, source_tree(tmp_path), after=after)

    status, _, lines = run(Harness(tmp_path), task)

    assert status is RunStatus.SUCCESSFUL
    assert "after hook 1: result=success task=1" in lines


def test_an_after_hook_sees_a_failed_backup(sshd: SshServer, tmp_path: Path) -> None:
    after = ['echo "result=$RECONCILER_RESULT"']
    task = hooked(sshd, tmp_path, tmp_path / "missing", after=after)

    status, _, lines = run(Harness(tmp_path), task)

    assert status is RunStatus.FAILED
    assert "after hook 1: result=failure" in lines


def test_after_hooks_run_when_a_before_hook_failed(sshd: SshServer, tmp_path: Path) -> None:
    task = hooked(
        sshd, tmp_path, source_tree(tmp_path), before=["false"], after=['echo "$RECONCILER_RESULT"']
    )

    status, _, lines = run(Harness(tmp_path), task)

    assert status is RunStatus.FAILED
    assert "after hook 1: failure" in lines


def test_a_failing_after_hook_is_a_warning_and_every_after_hook_runs(
    sshd: SshServer, tmp_path: Path
) -> None:
    task = hooked(sshd, tmp_path, source_tree(tmp_path), after=["exit 4", "echo second"])

    status, reason, lines = run(Harness(tmp_path), task)

    assert status is RunStatus.SUCCESSFUL, reason
    assert "warning: after hook 1 (exit 4) exited with 4" in lines
    assert "after hook 2: second" in lines
    assert len(stored(tmp_path)) == 1


ODD_TEXT = 'it\'s "quoted" $HOME `x` $(y) ; & | \\ back\\\nnew line\ttab ünïcödé ✓\n'


@pytest.fixture(scope="module", params=["dash", "bash", "zsh", "fish"])
def login(request: pytest.FixtureRequest, sshd: SshServer) -> Iterator[ShellLogin]:
    with shell_user(request.param) as user:
        user.authorize(sshd)
        yield user


def test_hook_text_arrives_verbatim_under_every_login_shell(
    sshd: SshServer, login: ShellLogin, tmp_path: Path
) -> None:
    with owned_directory(login.username, "reconciler-hooks-") as root:
        copy = root / "copy"
        # The hook writes its own text (read back from the heredoc it is) to a file.
        hook = f"cat > '{copy}' <<'REC_END'\n{ODD_TEXT}REC_END\n"
        source = root / "data"
        source.mkdir()
        (source / "f").write_text("x")
        task = hooked(dataclasses.replace(sshd, username=login.username), tmp_path, source,
                      before=[hook])  # fmt: skip

        status, reason, _ = run(Harness(tmp_path), task)

        assert status is RunStatus.SUCCESSFUL, f"{login.shell}: {reason}"
        assert copy.read_text() == ODD_TEXT


def test_hooks_run_under_posix_sh_whatever_the_login_shell(
    sshd: SshServer, login: ShellLogin, tmp_path: Path
) -> None:
    with owned_directory(login.username, "reconciler-hooks-") as root:
        source = root / "data"
        source.mkdir()
        (source / "f").write_text("x")
        # POSIX syntax fish cannot read; $0 is our fixed name for the hook's shell.
        hook = 'if [ -n "$RECONCILER_TASK_ID" ]; then echo "posix $0 $RECONCILER_HOOK"; fi'
        task = hooked(dataclasses.replace(sshd, username=login.username), tmp_path, source,
                      before=[hook])  # fmt: skip

        status, reason, lines = run(Harness(tmp_path), task)

        assert status is RunStatus.SUCCESSFUL, f"{login.shell}: {reason}"
        assert "before hook 1: posix reconciler-hook before" in lines
