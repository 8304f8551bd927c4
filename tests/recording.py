"""A remote login that records when each backup command starts and ends on the remote, so a test
sees how many ran there at once (what the remote server saw, not what the daemon says).

sshd runs a forced command for this login: it appends `start` to a log, waits while a gate file
exists (a test holds runs open with it), sleeps a little (so runs that may overlap do), runs the
daemon's command in full, and appends `end`. Appends of one short line are atomic, so the log's
line order is the order of events on the remote.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.servers import SshServer, owned_directory, shell_user

# Long enough that two runs allowed to overlap do, short enough for a test of a dozen runs.
HOLD_SECONDS = 0.4


@dataclass(frozen=True)
class RecordingRemote:
    server: SshServer  # the test sshd, reached as the recording login
    source: Path  # a small directory the login can read, to back up
    directory: Path

    @property
    def _log(self) -> Path:
        return self.directory / "runs.log"

    @property
    def _gate(self) -> Path:
        return self.directory / "gate"

    def events(self) -> list[str]:
        return self._log.read_text().split() if self._log.exists() else []

    def started(self) -> int:
        return self.events().count("start")

    def most_at_once(self) -> int:
        """The most backup commands that were running on the remote at the same moment."""
        running = most = 0
        for event in self.events():
            running += 1 if event == "start" else -1
            most = max(most, running)
        return most

    def close_gate(self) -> None:
        """Hold every command that starts from now on at its start, until `open_gate`."""
        self._gate.touch()

    def open_gate(self) -> None:
        self._gate.unlink(missing_ok=True)

    def wait_until_started(self, count: int, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while self.started() < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"{count} commands should have started: {self.events()}")
            time.sleep(0.02)


@contextmanager
def recording_remote(sshd: SshServer) -> Iterator[RecordingRemote]:
    with shell_user("sh") as login, owned_directory(login.username, "reconciler-rec-") as root:
        script = root / "record.sh"
        script.write_text(
            "#!/bin/sh\n"
            f"echo start >> {root}/runs.log\n"
            f"while [ -e {root}/gate ]; do sleep 0.02; done\n"
            f"sleep {HOLD_SECONDS}\n"
            'sh -c "$SSH_ORIGINAL_COMMAND"\n'
            "status=$?\n"
            f"echo end >> {root}/runs.log\n"
            'exit "$status"\n'
        )
        script.chmod(0o755)
        login.authorize(sshd, forced_command=str(script))
        source = root / "src"
        source.mkdir()
        (source / "a.txt").write_text("a\n")
        yield RecordingRemote(dataclasses.replace(sshd, username=login.username), source, root)
