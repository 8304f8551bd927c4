"""`reconciler serve --remote` in its own process: cloned on first start, woken by a webhook
over real HTTP, and refusing a `--repo` cloned from elsewhere."""

from __future__ import annotations

from pathlib import Path

import httpx

from reconciler.api.hooks import signature
from tests import configset
from tests.daemonproc import create_token, reconciler, serving
from tests.gitrepo import commit_files, git, head, init_repo, shared_with_a_remote

SECRET = "shared with the git server"
PUSH_EVENT = b'{"ref": "refs/heads/main"}'


def team_repository(tmp_path: Path) -> tuple[Path, str]:
    """A person's clone and the file:// URL of the bare repository it pushes to."""
    person = tmp_path / "person"
    files = {**configset.base_files(), "tasks/1-home.yaml": configset.task(1)}
    return person, shared_with_a_remote(person, files, tmp_path / "upstream.git")


def webhook(url: str, secret: str) -> int:
    headers = {"X-Hub-Signature-256": signature(PUSH_EVENT, secret)}
    return httpx.post(url + "/api/hooks/git", content=PUSH_EVENT, headers=headers).status_code


def test_serve_clones_the_remote_on_first_start_and_follows_it(tmp_path: Path) -> None:
    person, url = team_repository(tmp_path)
    state, clone = tmp_path / "state" / "state.db", tmp_path / "clone"
    env = {"RECONCILER_REMOTE": url}
    with serving(clone, state, create_token(state), tmp_path / "daemon.log", env) as daemon:
        assert daemon.get("/api/sync")["data"]["revision"] == head(person)
        pushed = commit_files(person, {"tasks/2-srv.yaml": configset.task(2)}, "add srv")
        git(person, "push", "-q", "origin", "main")

        assert webhook(daemon.url, SECRET) == 404  # no secret configured
        status, synced = daemon.send("POST", "/api/sync", {})

        assert status == 200
        assert synced["data"]["revision"] == pushed
        assert synced["data"]["remote"]["url"] == url
    assert head(clone) == pushed
    assert "Traceback" not in daemon.log.read_text()


def test_a_webhook_signed_with_the_secret_file_brings_a_push(tmp_path: Path) -> None:
    person, url = team_repository(tmp_path)
    (tmp_path / "webhook-secret").write_text(SECRET + "\n")
    state = tmp_path / "state" / "state.db"
    options = ["--remote", url, "--fetch-interval", "3600"]
    options += ["--webhook-secret-file", str(tmp_path / "webhook-secret")]
    log = tmp_path / "daemon.log"
    with serving(tmp_path / "clone", state, create_token(state), log, options=options) as daemon:
        pushed = commit_files(person, {"tasks/2-srv.yaml": configset.task(2)}, "add srv")
        git(person, "push", "-q", "origin", "main")

        assert webhook(daemon.url, "not the secret") == 401
        assert webhook(daemon.url, SECRET) == 202
        daemon.wait_for_revision(pushed, within=10)


def test_the_webhook_secret_may_come_from_the_environment(tmp_path: Path) -> None:
    _, url = team_repository(tmp_path)
    state = tmp_path / "state" / "state.db"
    env = {"RECONCILER_REMOTE": url, "RECONCILER_WEBHOOK_SECRET": SECRET}
    log = tmp_path / "daemon.log"
    with serving(tmp_path / "clone", state, create_token(state), log, env) as daemon:
        assert webhook(daemon.url, SECRET) == 202


def test_serve_refuses_a_repo_cloned_from_elsewhere_in_one_sentence(tmp_path: Path) -> None:
    _, url = team_repository(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    init_repo(elsewhere, configset.base_files())
    git(tmp_path, "clone", "-q", str(elsewhere), str(tmp_path / "clone"))

    served = reconciler(
        "serve", "--repo", tmp_path / "clone", "--state", tmp_path / "state" / "state.db",
        "--remote", url, "--port", "0",
    )  # fmt: skip

    assert served.returncode == 2
    assert served.stderr.startswith(f"reconciler: {tmp_path / 'clone'} is a clone with origin")
    assert served.stderr.count("\n") == 1
    assert "Traceback" not in served.stderr


def test_a_webhook_secret_without_a_remote_is_refused(tmp_path: Path) -> None:
    (tmp_path / "secret").write_text(SECRET)
    init_repo(tmp_path / "config", configset.base_files())

    served = reconciler(
        "serve", "--repo", tmp_path / "config", "--state", tmp_path / "state" / "state.db",
        "--webhook-secret-file", tmp_path / "secret",
    )  # fmt: skip

    assert served.returncode == 2
    assert "a webhook secret needs --remote" in served.stderr
