"""The subprocess runner, with real programs: argv only, bounded stderr, timeouts, one error."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reconciler.processes import (
    HEAD_LINES,
    LINE_CHARS,
    TAIL_LINES,
    Process,
    ProcessError,
    StderrExcerpt,
    pipeline,
    run,
)


def test_a_program_runs_to_completion_and_its_output_is_returned() -> None:
    done = run(["printf", "%s|", "a b", "$HOME", "; rm -rf /"], timeout=10)
    assert done.returncode == 0
    assert done.stdout == b"a b|$HOME|; rm -rf /|"


def test_a_command_given_as_a_string_is_refused() -> None:
    with pytest.raises(TypeError, match="list of arguments"):
        run("echo hello", timeout=10)


def test_a_non_zero_exit_names_the_program_its_status_and_its_error_output() -> None:
    with pytest.raises(ProcessError) as raised:
        run(["sh", "-c", "echo 'no such thing' >&2; exit 3"], timeout=10)
    assert str(raised.value) == "sh exited with 3: no such thing"
    assert raised.value.program == "sh"
    assert raised.value.stderr == "no such thing"


def test_a_non_zero_exit_is_returned_when_not_checked() -> None:
    done = run(["sh", "-c", "exit 3"], timeout=10, check=False)
    assert done.returncode == 3


def test_a_program_killed_by_a_signal_says_which() -> None:
    with pytest.raises(ProcessError, match=r"^sh was killed by SIGTERM$"):
        run(["sh", "-c", "kill -TERM $$"], timeout=10)


def test_a_git_command_is_named_with_its_subcommand(tmp_path: Path) -> None:
    with pytest.raises(ProcessError, match=r"^git push exited with 128: fatal: "):
        run(["git", "-C", str(tmp_path), "push", "nowhere"], timeout=10)


def test_a_missing_program_is_a_clear_error() -> None:
    with pytest.raises(ProcessError, match=r"^no-such-program-7f3a could not be started"):
        run(["no-such-program-7f3a", "--version"], timeout=10)


def test_a_megabyte_of_error_output_is_kept_as_its_first_and_last_lines() -> None:
    lines_written = 32_000  # about 1 MB
    script = (
        f"i=0; while [ $i -lt {lines_written} ]; do"
        ' echo "line $i of noise padding padding"; i=$((i+1)); done >&2; exit 1'
    )
    with pytest.raises(ProcessError) as raised:
        run(["sh", "-c", script], timeout=60)
    lines = raised.value.stderr.splitlines()
    assert lines[0] == "line 0 of noise padding padding"
    assert lines[HEAD_LINES - 1] == f"line {HEAD_LINES - 1} of noise padding padding"
    assert (
        lines[HEAD_LINES] == f"[... {lines_written - HEAD_LINES - TAIL_LINES} lines left out ...]"
    )
    assert lines[-1] == f"line {lines_written - 1} of noise padding padding"
    assert len(lines) == HEAD_LINES + 1 + TAIL_LINES
    assert len(str(raised.value)) < (HEAD_LINES + TAIL_LINES + 2) * 60


def test_a_megabyte_on_one_line_is_cut_at_the_line_limit() -> None:
    with pytest.raises(ProcessError) as raised:
        run(["sh", "-c", "head -c 1048576 /dev/zero | tr '\\0' x >&2; exit 1"], timeout=60)
    assert raised.value.stderr == "x" * LINE_CHARS


def test_a_timeout_kills_the_whole_process_group(tmp_path: Path) -> None:
    pid_file = tmp_path / "grandchild.pid"
    started = time.monotonic()
    with pytest.raises(ProcessError, match=r"^sh timed out after 0.5 s and was stopped"):
        # The grandchild holds stdout open: only killing the group ends the run.
        run(["sh", "-c", f"sleep 60 & echo $! > {pid_file}; wait"], timeout=0.5)
    assert time.monotonic() - started < 30
    grandchild = int(pid_file.read_text())
    for _ in range(100):
        if not _alive(grandchild):
            break
        time.sleep(0.05)
    assert not _alive(grandchild)


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_a_program_that_reads_no_input_is_stopped_at_its_deadline() -> None:
    with pytest.raises(ProcessError, match="timed out"):
        run(["sleep", "60"], timeout=0.5, input=b"x" * (8 << 20))


def test_input_is_fed_to_stdin() -> None:
    assert run(["tr", "a-z", "A-Z"], timeout=10, input=b"quiet\n").stdout == b"QUIET\n"


def test_a_streamed_process_passes_megabytes_through() -> None:
    data = os.urandom(3 << 20)
    received = bytearray()
    with Process(["cat"]) as process:

        def drain() -> None:
            assert process.stdout_fd is not None
            while chunk := os.read(process.stdout_fd, 1 << 20):
                received.extend(chunk)

        reader = threading.Thread(target=drain)
        reader.start()
        process.write(data)
        process.close_stdin()
        process.check(timeout=30)
        reader.join()
    assert bytes(received) == data


def test_a_streamed_process_that_fails_reports_its_bounded_error() -> None:
    with Process(["sh", "-c", "cat > /dev/null; echo broken >&2; exit 2"]) as process:
        process.write(b"some input")
        process.close_stdin()
        failure = process.failure()
    assert failure is not None
    assert str(failure) == "sh exited with 2: broken"


def test_a_pipeline_connects_each_stage_to_the_next(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with out.open("wb") as sink:
        stages = pipeline([["tr", "a-z", "A-Z"], ["rev"]], stdout=sink)
        stages[0].write(b"abc\n")
        stages[0].close_stdin()
        for stage in stages:
            stage.check(timeout=10)
            stage.close()
    assert out.read_bytes() == b"CBA\n"


def test_closing_a_running_process_kills_it() -> None:
    process = Process(["sleep", "60"], stdin=None, stdout=None)
    process.close()
    assert process.returncode == -9


@given(st.lists(st.binary(max_size=600), max_size=40))
def test_an_excerpt_is_bounded_whatever_the_output(pieces: list[bytes]) -> None:
    excerpt = StderrExcerpt()
    for piece in pieces:
        excerpt.feed(piece)
    lines = excerpt.text().splitlines()
    assert len(lines) <= HEAD_LINES + 1 + TAIL_LINES
    assert all(len(line) <= LINE_CHARS * 3 for line in lines)  # replacement chars may widen


@given(st.lists(st.text(alphabet="abc", min_size=1, max_size=30), min_size=1, max_size=40))
def test_an_excerpt_keeps_the_first_and_last_lines(lines: list[str]) -> None:
    excerpt = StderrExcerpt()
    data = "".join(f"{line}\n" for line in lines).encode()
    for start in range(0, len(data), 7):  # fed in pieces that split lines
        excerpt.feed(data[start : start + 7])
    if len(lines) <= HEAD_LINES + TAIL_LINES:
        assert excerpt.text().splitlines() == lines
    else:
        left_out = len(lines) - HEAD_LINES - TAIL_LINES
        assert excerpt.text().splitlines() == [
            *lines[:HEAD_LINES],
            f"[... {left_out} lines left out ...]",
            *lines[-TAIL_LINES:],
        ]


def test_a_cancelled_program_is_killed_and_ends_as_killed(tmp_path: Path) -> None:
    cancel = threading.Event()
    threading.Timer(0.3, cancel.set).start()
    started = time.monotonic()
    done = run(["sleep", "60"], timeout=60, check=False, cancel=cancel)
    assert done.returncode == -signal.SIGKILL
    assert time.monotonic() - started < 10
