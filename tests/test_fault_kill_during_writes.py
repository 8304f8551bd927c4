"""kill -9 of the daemon at random points during API writes, then a restart and the retries.

Every write carries an Idempotency-Key, so each API commit names the request it came from. After
the trials: the work tree is clean, every 2xx is in exactly one commit, no commit exists without
a request that was sent, the set validates, ids were never reused, and retrying every request
whose answer was lost writes nothing twice.
"""

from __future__ import annotations

import hashlib
import random
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests import configset
from tests.daemonproc import RunningDaemon, create_token, reconciler, serving
from tests.gitrepo import git, init_repo

NEW_TASK = {
    "remote_server_id": 1,
    "backup_destination_id": 1,
    "type": "files",
    "source_path": "/srv",
    "frequency": "daily",
    "time_to_run_at": "03:00",
}


@dataclass
class Request:
    key: str
    method: str
    path: str
    body: dict[str, Any] | None
    answer: tuple[int, Any] | None = None


@dataclass
class Client:
    """Writes in a loop until the daemon goes away: creates, relabels and deletes."""

    url: str
    token: str
    chance: random.Random
    sent: list[Request]
    created: list[int] = field(default_factory=list)

    def run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=10) as http:
            while True:
                request = self._next()
                self.sent.append(request)
                try:
                    response = http.request(
                        request.method,
                        request.path,
                        json=request.body,
                        headers={
                            "Authorization": f"Bearer {self.token}",
                            "Idempotency-Key": request.key,
                        },
                    )
                except httpx.TransportError:
                    return  # killed: this request's answer is lost
                request.answer = (response.status_code, response.json())
                if request.method == "POST" and response.status_code == 201:
                    self.created.append(response.json()["data"]["id"])
                if request.method == "DELETE" and response.status_code == 200:
                    self.created.remove(int(request.path.rsplit("/", 1)[1]))

    def _next(self) -> Request:
        key = f"req-{len(self.sent)}-{self.chance.getrandbits(32):08x}"
        roll = self.chance.random()
        if self.created and roll < 0.25:
            return Request(key, "DELETE", f"/api/backup-tasks/{self.created[0]}", None)
        if self.created and roll < 0.6:
            target = self.chance.choice(self.created)
            return Request(key, "PUT", f"/api/backup-tasks/{target}", {"label": f"label {key}"})
        return Request(key, "POST", "/api/backup-tasks", {**NEW_TASK, "label": f"new {key}"})


def _key_id(key: str) -> str:
    return hashlib.sha256(f"1\0{key}".encode()).hexdigest()[:32]


def _commits(repo: Path) -> list[tuple[str, str]]:
    """(subject, body) of every commit, oldest first."""
    out = git(repo, "log", "--reverse", "--format=%s%x1f%b%x1e")
    commits = []
    for entry in out.split("\x1e"):
        if entry.strip():
            subject, _, body = entry.strip("\n").partition("\x1f")
            commits.append((subject, body))
    return commits


def test_kill_9_during_api_writes_loses_nothing_and_doubles_nothing(
    tmp_path: Path, pytestconfig: pytest.Config
) -> None:
    trials: int = pytestconfig.getoption("--kill-trials")
    repo = tmp_path / "config"
    init_repo(repo, {**configset.base_files(), "tasks/1-home.yaml": configset.task(1)})
    state = tmp_path / "state" / "state.db"
    token = create_token(state)
    chance = random.Random(20261201)
    sent: list[Request] = []
    created: list[int] = []
    log = tmp_path / "daemon.log"
    for _ in range(trials):
        with serving(repo, state, token, log) as daemon:
            client = Client(daemon.url, token, chance, sent, created)
            worker = threading.Thread(target=client.run)
            worker.start()
            time.sleep(chance.uniform(0.05, 0.5))
            daemon.process.kill()
            daemon.process.wait()
            worker.join(timeout=30)
            assert not worker.is_alive()

    with serving(repo, state, token, log) as daemon:
        _assert_consistent(repo, sent)
        _assert_retries_write_nothing_new(daemon, repo, sent)


def _assert_consistent(repo: Path, sent: list[Request]) -> None:
    assert git(repo, "status", "--porcelain", "--untracked-files=all") == ""
    validated = reconciler("validate", str(repo))
    assert validated.returncode == 0, validated.stdout + validated.stderr
    keys = {_key_id(request.key): request for request in sent}
    committed: dict[str, int] = {}
    created_ids: list[int] = []
    deleted_ids: set[int] = set()
    for subject, body in _commits(repo):
        if not subject.startswith("api:"):
            continue
        found = re.search(r"^Reconciler-Request: ([0-9a-f]{32}) ", body, re.MULTILINE)
        assert found is not None, f"an API commit without its request: {subject}"
        assert found[1] in keys, f"a commit for a request nobody sent: {subject}"
        committed[found[1]] = committed.get(found[1], 0) + 1
        if (made := re.match(r"api: create backup task (\d+) ", subject)) is not None:
            assert int(made[1]) not in deleted_ids
            assert int(made[1]) not in created_ids
            created_ids.append(int(made[1]))
        if (gone := re.match(r"api: delete backup task (\d+) ", subject)) is not None:
            deleted_ids.add(int(gone[1]))
    assert all(count == 1 for count in committed.values()), "a request committed twice"
    for request in sent:  # every request changes something: a 2xx means a commit
        if request.answer is not None and request.answer[0] in (200, 201):
            assert _key_id(request.key) in committed, f"{request.key} answered 2xx, no commit"
    assert created_ids == sorted(created_ids)


def _assert_retries_write_nothing_new(
    daemon: RunningDaemon, repo: Path, sent: list[Request]
) -> None:
    before = git(repo, "rev-parse", "HEAD")
    committed_keys = {
        found for found in re.findall(r"Reconciler-Request: ([0-9a-f]{32}) ", git(repo, "log"))
    }
    with httpx.Client(base_url=daemon.url, timeout=10) as http:
        for request in sent:
            if request.answer is not None and request.answer[0] not in (200, 201):
                continue
            response = http.request(
                request.method,
                request.path,
                json=request.body,
                headers={"Authorization": f"Bearer {daemon.token}", "Idempotency-Key": request.key},
            )
            if request.answer is not None:
                assert (response.status_code, response.json()) == request.answer, request.key
            elif _key_id(request.key) in committed_keys:
                assert response.status_code in (200, 201, 409), response.text
    new_commits = git(repo, "log", "--format=%b", f"{before.strip()}..HEAD")
    for found in re.findall(r"Reconciler-Request: ([0-9a-f]{32}) ", new_commits):
        assert found not in committed_keys, "a retried request was committed again"
