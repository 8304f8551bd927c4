"""Secrets the config set no longer names are deleted; a secret any committed file names is kept."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from reconciler.api.secretkeys import forget_unreferenced
from reconciler.gitstore import GitStore
from reconciler.secrets import Secrets
from tests import configset
from tests.gitrepo import git, head, init_repo
from tests.test_daemon import running_daemon

USED_KEY = "task-1-encryption-password-aa"
NOT_PARSING = "id: 5\nencryption_password: {secret: 'hand-made'}\n  broken: [\n"


def _store(path: Path, keys: list[str]) -> Secrets:
    secrets = Secrets(path, {})
    for key in keys:
        secrets.put(key, f"value of {key}")
    return secrets


def test_a_key_no_committed_file_names_is_forgotten(tmp_path: Path) -> None:
    repo = tmp_path / "config"
    init_repo(
        repo,
        {
            **configset.base_files(),
            "tasks/1.yaml": configset.task(1, encryption_password={"secret": USED_KEY}),
        },
    )
    secrets = _store(tmp_path / "s.json", ["task-1-encryption-password-aa", "task-9-orphan-bb"])

    removed = forget_unreferenced(GitStore(repo), secrets, head(repo))

    assert removed == ["task-9-orphan-bb"]
    assert secrets.keys() == {"task-1-encryption-password-aa"}


def test_a_key_named_only_by_a_file_that_does_not_parse_is_kept(tmp_path: Path) -> None:
    repo = tmp_path / "config"
    init_repo(repo, {**configset.base_files(), "tasks/5.yaml": NOT_PARSING})
    secrets = _store(tmp_path / "s.json", ["hand-made"])

    assert forget_unreferenced(GitStore(repo), secrets, head(repo)) == []


def test_only_the_keys_asked_about_are_considered(tmp_path: Path) -> None:
    repo = tmp_path / "config"
    init_repo(repo, configset.base_files())
    secrets = _store(tmp_path / "s.json", ["asked", "not-asked"])

    forget_unreferenced(GitStore(repo), secrets, head(repo), ["asked"])

    assert secrets.keys() == {"not-asked"}


def test_the_daemon_sweeps_unreferenced_secrets_at_start_up(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    _store(state / "state.db.secrets.json", ["task-1-encryption-password-aa", "left-by-a-crash"])
    files = {
        **configset.base_files(),
        "tasks/1-home.yaml": configset.task(1, encryption_password={"secret": USED_KEY}),
    }

    with running_daemon(tmp_path, files) as daemon:
        kept = json.loads((state / "state.db.secrets.json").read_text())
        log = daemon.log.read_text()

    assert set(kept) == {"task-1-encryption-password-aa"}
    assert "1 secret" in log


def test_nothing_is_forgotten_on_a_branch_without_a_commit(tmp_path: Path) -> None:
    repo = tmp_path / "config"
    git(tmp_path, "init", "-q", "-b", "main", str(repo))
    secrets = _store(tmp_path / "s.json", ["in-use-somewhere"])

    assert forget_unreferenced(GitStore(repo), secrets, None) == []
    assert secrets.keys() == {"in-use-somewhere"}


@pytest.mark.parametrize(
    "reference",
    [
        "encryption_password:\n  secret:\n    next-line\n",
        "encryption_password: {secret: !!str tagged}\n",
        'encryption_password: {"secret": "quoted"}\n',
    ],
)
def test_a_key_named_in_any_yaml_form_is_kept(tmp_path: Path, reference: str) -> None:
    repo = tmp_path / "config"
    init_repo(repo, {**configset.base_files(), "tasks/1.yaml": configset.task(1) + reference})
    key = reference.rsplit(" ", 1)[-1].strip('\n}"').split()[-1]
    secrets = _store(tmp_path / "s.json", [key])

    assert forget_unreferenced(GitStore(repo), secrets, head(repo)) == []
