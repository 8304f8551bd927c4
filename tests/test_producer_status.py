"""A producer's tolerated warning counts only when the producer itself reported it: GNU tar's exit
status 1 ("file changed as we read it") is a warning in the run log, while a bare 1 from anything
else fails the run even when the stream is complete."""

from __future__ import annotations

import os
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from reconciler.commands import EXIT_PRODUCER_WARNING, TAR_CHANGED_FILES_WARNING, _pipeline
from reconciler.models import Compression, Storage
from reconciler.types import RunStatus
from tests.runs import Harness, files_task
from tests.servers import SshServer, owned_directory, shell_user

CAT = ("cat",)
FAILING_COMPRESSOR = ("sh", "-c", "cat > /dev/null; exit 1")


def writing_then_exiting(status: int) -> str:
    """A producer command that writes some data and exits with `status`."""
    return f"sh -c 'echo data; exit {status}'"


def script_status(producer: str, compressor: tuple[str, ...] | None) -> int:
    script = _pipeline(producer, compressor, warning_status=1)
    return subprocess.run(["sh", "-c", script], capture_output=True, check=False).returncode


@pytest.mark.parametrize("compressor", [CAT, None], ids=["compressed", "plain"])
@pytest.mark.parametrize(
    ("producer_status", "expected"),
    [(0, 0), (1, EXIT_PRODUCER_WARNING), (2, 2)],
)
def test_the_script_reports_the_producers_warning_with_its_own_status(
    compressor: tuple[str, ...] | None, producer_status: int, expected: int
) -> None:
    assert script_status(writing_then_exiting(producer_status), compressor) == expected


@pytest.mark.parametrize("producer_status", [0, 1])
def test_a_failing_compressor_fails_the_script_even_after_a_producer_warning(
    producer_status: int,
) -> None:
    assert script_status(writing_then_exiting(producer_status), FAILING_COMPRESSOR) == 1


@pytest.fixture
def changing_source(tmp_path: Path) -> Iterator[Path]:
    """A source whose large file grows all the time, so tar sees it change while reading it."""
    source = tmp_path / "live"
    source.mkdir()
    growing = source / "growing.log"
    growing.write_bytes(os.urandom(64 << 20))
    stop = threading.Event()

    def append() -> None:
        with growing.open("ab") as log:
            while not stop.wait(0.001):
                log.write(b"another line\n")
                log.flush()

    writer = threading.Thread(target=append, daemon=True)
    writer.start()
    try:
        yield source
    finally:
        stop.set()
        writer.join()


def test_tar_reporting_a_file_changed_while_read_is_a_logged_warning_not_a_failure(
    sshd: SshServer, changing_source: Path, tmp_path: Path
) -> None:
    storage = Storage(compression=Compression.NONE, max_backups=0)
    task = files_task(sshd, tmp_path / "dest", changing_source, storage=storage)
    harness = Harness(tmp_path)
    for _ in range(5):  # tar reads 64 MiB while a line is appended every millisecond
        assert harness.run(task) is RunStatus.SUCCESSFUL
        record = harness.state.runs.latest_run(task.id)
        assert record is not None
        if "file changed as we read it" in record.output:
            break
    else:
        pytest.fail("tar never saw the file change in five runs")
    assert f"warning: {TAR_CHANGED_FILES_WARNING}" in record.output


def test_a_bare_exit_status_of_one_fails_the_run_even_with_a_complete_stream(
    sshd: SshServer, tmp_path: Path
) -> None:
    """sshd runs a forced command that runs ours in full, then exits 1 itself."""
    with shell_user("sh") as login, owned_directory(login.username, "reconciler-status-") as root:
        login.authorize(sshd, forced_command='sh -c "$SSH_ORIGINAL_COMMAND"; exit 1')
        source = root / "src"
        source.mkdir()
        (source / "a.txt").write_text("a")
        harness = Harness(tmp_path)
        task = files_task(replace(sshd, username=login.username), tmp_path / "dest", source)
        status = harness.run(task)
    record = harness.state.runs.latest_run(task.id)
    assert record is not None
    assert status is RunStatus.FAILED
    assert record.reason == "the remote command exited with 1: no error output"
    assert list((tmp_path / "dest").iterdir()) == []
