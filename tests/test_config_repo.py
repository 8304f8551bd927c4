"""Working with the config repository: `init` scaffolds one, `plan --against REV` reviews a change,
and the pre-commit hook runs `validate` on it. Real git, real ssh-keygen, a real daemon."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.desired import DesiredState, build_desired
from reconciler.documents import parse_file
from reconciler.models import RemoteServer
from reconciler.scaffold import SERVER_FILE, Host, ScaffoldError, scaffold_files
from tests import configset
from tests.daemonproc import create_token, reconciler, serving
from tests.gitrepo import commit_files, git, head, init_repo

PROJECT = Path(__file__).resolve().parent.parent
TASK_FILE = "tasks/1-this-config-repository.yaml"


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """A home directory of our own, so no key or git config of the machine's user leaks in."""
    path = tmp_path / "home"
    path.mkdir()
    return path


def isolated_env(home: Path, gitconfig: Path | None = None) -> dict[str, str]:
    return {
        "HOME": str(home),
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": str(gitconfig or os.devnull),
    }


def init(directory: Path, home: Path, gitconfig: Path | None = None) -> Path:
    result = reconciler("init", directory, env=isolated_env(home, gitconfig))
    assert result.returncode == 0, result.stderr
    return directory


def gitconfig_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gitconfig"
    path.write_text(text)
    return path


# --- init ---------------------------------------------------------------------------------------


def test_init_commits_a_config_set_on_main_that_validate_accepts_as_is(
    tmp_path: Path, home: Path
) -> None:
    repo = init(tmp_path / "config", home)
    assert git(repo, "branch", "--show-current").strip() == "main"
    assert git(repo, "status", "--porcelain") == ""
    assert git(repo, "ls-files").split() == sorted(
        ["README.md", "destinations/local-disk.yaml", SERVER_FILE, TASK_FILE, "users.yaml"]
    )
    result = reconciler("validate", repo)
    assert result.returncode == 0, result.stdout
    assert result.stdout == ""
    assert (
        "valid: 4 files, 1 users, 1 servers, 1 destinations, 0 notification streams, 1 tasks"
        in (result.stderr)
    )


def test_the_scaffolded_server_is_this_machine_on_loopback_as_the_current_user(
    tmp_path: Path, home: Path
) -> None:
    repo = init(tmp_path / "config", home)
    server = RemoteServer(**yaml.safe_load((repo / SERVER_FILE).read_text()))
    assert (server.host, server.port) == ("127.0.0.1", 22)
    assert server.username == (subprocess.run(["id", "-un"], capture_output=True, text=True)
                               .stdout.strip())  # fmt: skip
    task = yaml.safe_load((repo / TASK_FILE).read_text())
    assert task["source"] == {"type": "files", "path": str(repo.absolute())}


def test_init_uses_an_ssh_key_that_exists(tmp_path: Path, home: Path) -> None:
    (home / ".ssh").mkdir()
    key = home / ".ssh" / "id_ecdsa"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ecdsa", "-N", "", "-f", str(key)], check=True, timeout=30
    )
    repo = init(tmp_path / "config", home)
    assert yaml.safe_load((repo / SERVER_FILE).read_text())["private_key"] == str(key)
    result = reconciler("validate", repo, env=isolated_env(home))
    assert result.returncode == 0
    assert "note:" not in result.stderr


def test_without_a_key_init_names_the_key_to_create_and_validate_explains_it(
    tmp_path: Path, home: Path
) -> None:
    created = reconciler("init", tmp_path / "config", env=isolated_env(home))
    placeholder = home / ".ssh" / "id_ed25519"
    assert f"No SSH key found: create {placeholder}" in created.stdout
    assert (
        f"ssh-keygen -t ed25519 -f {placeholder}" in (tmp_path / "config" / SERVER_FILE).read_text()
    )
    result = reconciler("validate", tmp_path / "config", env=isolated_env(home))
    assert result.returncode == 0
    assert (
        f"note: {SERVER_FILE}: private_key {placeholder} is not a file on this machine; a run from "
        "here cannot log in until it exists"
    ) in result.stderr


def test_without_a_git_author_init_gives_the_repository_its_own(tmp_path: Path, home: Path) -> None:
    repo = init(tmp_path / "config", home)
    name = git(repo, "config", "--local", "user.name").strip()
    email = git(repo, "config", "--local", "user.email").strip()
    assert git(repo, "log", "-1", "--format=%an <%ae>").strip() == f"{name} <{email}>"
    (user,) = yaml.safe_load((repo / "users.yaml").read_text())
    assert (user["name"], user["email"]) == (name, email)


def test_init_commits_as_the_configured_git_author_and_makes_them_user_1(
    tmp_path: Path, home: Path
) -> None:
    config = gitconfig_file(tmp_path, "[user]\n\tname = Ada Lovelace\n\temail = ada@example.com\n")
    repo = init(tmp_path / "config", home, config)
    log = subprocess.run(
        ["git", "log", "-1", "--format=%an <%ae>"], cwd=repo,
        env={**os.environ, **isolated_env(home, config)},
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert log.stdout.strip() == "Ada Lovelace <ada@example.com>"
    local = subprocess.run(
        ["git", "config", "--local", "--get", "user.name"], cwd=repo, check=False
    )
    assert local.returncode == 1  # nothing of its own: the person's git config decides
    (user,) = yaml.safe_load((repo / "users.yaml").read_text())
    assert (user["id"], user["name"], user["email"]) == (1, "Ada Lovelace", "ada@example.com")


def test_init_fills_an_existing_empty_directory(tmp_path: Path, home: Path) -> None:
    (tmp_path / "config").mkdir()
    repo = init(tmp_path / "config", home)
    assert (repo / TASK_FILE).is_file()


def test_init_refuses_a_directory_that_is_not_empty_and_leaves_it_alone(
    tmp_path: Path, home: Path
) -> None:
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "users.yaml").write_text("mine\n")
    result = reconciler("init", tmp_path / "config", env=isolated_env(home))
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"reconciler: {tmp_path / 'config'} is not empty (it holds 'users.yaml'); reconciler init"
        " only fills a new or empty directory and never overwrites anything"
    ]
    assert os.listdir(tmp_path / "config") == ["users.yaml"]
    assert (tmp_path / "config" / "users.yaml").read_text() == "mine\n"


def test_init_refuses_an_existing_repository(tmp_path: Path, home: Path) -> None:
    init_repo(tmp_path / "config", {})
    before = head(tmp_path / "config")
    result = reconciler("init", tmp_path / "config", env=isolated_env(home))
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"reconciler: {tmp_path / 'config'} is already a git repository; reconciler init only "
        "creates new ones"
    ]
    assert head(tmp_path / "config") == before
    assert git(tmp_path / "config", "ls-files") == ""


@pytest.mark.parametrize("existed", [True, False], ids=["empty directory", "new directory"])
def test_an_init_whose_commit_fails_leaves_nothing_behind(
    tmp_path: Path, home: Path, existed: bool
) -> None:
    target = tmp_path / "config"
    if existed:
        target.mkdir()
    # A signing program that refuses: git's own commit fails after every file was written.
    config = gitconfig_file(
        tmp_path, "[user]\n\tname = A\n\temail = a@example.com\n"
        "[commit]\n\tgpgsign = true\n[gpg]\n\tprogram = false\n",
    )  # fmt: skip
    result = reconciler("init", target, env=isolated_env(home, config))
    assert result.returncode == 2
    assert result.stderr.startswith("reconciler: ")
    assert "Traceback" not in result.stderr
    assert os.listdir(target) == [] if existed else not target.exists()


def test_init_refuses_a_git_author_that_cannot_be_a_user_in_one_sentence(
    tmp_path: Path, home: Path
) -> None:
    config = gitconfig_file(
        tmp_path, '[user]\n\tname = "Ada\\tLovelace"\n\temail = a@example.com\n'
    )
    result = reconciler("init", tmp_path / "config", env=isolated_env(home, config))
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "reconciler: cannot write the user: name: Value error, must be one line of text, without "
        "control characters"
    ]
    assert not (tmp_path / "config").exists()


def test_a_scaffolded_repository_is_served_and_its_task_scheduled(
    tmp_path: Path, home: Path
) -> None:
    repo = init(tmp_path / "config", home)
    state = tmp_path / "state" / "state.db"
    with serving(repo, state, create_token(state), tmp_path / "daemon.log") as daemon:
        sync = daemon.get("/api/sync")["data"]
        assert sync["revision"] == head(repo)
        assert sync["errors"] == []
        (upcoming,) = daemon.get("/api/backup-tasks/upcoming")["data"]
    assert (upcoming["id"], upcoming["label"]) == (1, "This config repository")
    next_run = datetime.fromisoformat(upcoming["next_run_utc_time"])
    assert next_run.strftime("%H:%M") == "03:00"
    assert next_run > datetime.now(UTC)


# The logins, names and e-mails the models accept, including YAML's traps (`1e3`, `null`, `on`).
_logins = st.from_regex(r"\A[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}\Z") | st.sampled_from(
    ["1e3", "0o17", "null", "on", "no", "0x1F", "1_000", "true", "1.5e3", "NaN"]
)
_names = st.text(st.characters(blacklist_categories=("Cc", "Cs")), min_size=1, max_size=40).filter(
    lambda name: name.strip() == name and name.strip()
)
_paths = st.lists(
    st.from_regex(r"\A[A-Za-z0-9_.:#-][A-Za-z0-9 _.:#-]{0,10}[A-Za-z0-9_.:#-]\Z"),
    min_size=1,
    max_size=3,
).map(lambda parts: "/" + "/".join(parts))


@settings(max_examples=300, deadline=None)
@given(login=_logins, name=_names, path=_paths, key_exists=st.booleans())
def test_scaffolded_files_always_read_back_as_the_models_they_came_from(
    login: str, name: str, path: str, key_exists: bool
) -> None:
    host = Host(
        login=login,
        private_key=f"{path}/.ssh/id_ed25519",
        key_exists=key_exists,
        person_name=name,
        person_email=f"{login}@example.com",
        backup_dir=f"{path}/backups",
        repository=path,
    )
    files = scaffold_files(host)
    parsed = {p: parse_file(p, text.encode()) for p, text in files.items() if p.endswith(".yaml")}
    desired = build_desired(parsed, DesiredState())
    assert desired.errors == ()
    (task,) = desired.tasks.values()
    assert task.server.username == login
    assert task.owner.name == name
    assert task.task.source.path == path


def test_a_path_a_config_file_cannot_hold_as_given_is_refused_not_changed() -> None:
    host = Host(
        login="backup",
        private_key="/home/backup/.ssh/id_ed25519",
        key_exists=True,
        person_name="Ada",
        person_email="ada@example.com",
        backup_dir="/var/backups/reconciler",
        repository="/srv/config ",
    )
    with pytest.raises(ScaffoldError) as refused:
        scaffold_files(host)
    assert str(refused.value) == (
        "cannot write the example task: source.path: '/srv/config ' would read as '/srv/config'"
    )


# --- plan ---------------------------------------------------------------------------------------


def two_commits(repo: Path) -> tuple[str, str]:
    first = init_repo(
        repo,
        {
            **configset.base_files(),
            "tasks/1.yaml": configset.task(1),
            "tasks/3.yaml": configset.task(3),
        },
    )
    second = commit_files(
        repo,
        {"tasks/1.yaml": configset.task(1, label="renamed"), "tasks/2.yaml": configset.task(2),
         "tasks/3.yaml": None},
        "second",
    )  # fmt: skip
    return first, second


CHANGES = [
    "+ task 2 (task 2) will be added",
    "~ task 1 (renamed) will change:",
    "    task.label: 'task 1' -> 'renamed'",
    "- task 3 (task 3) will be removed",
    "Plan: 1 to add, 1 to change, 1 to remove.",
]


@pytest.mark.parametrize("rev", ["HEAD~1", "sha"])
def test_plan_against_a_previous_revision_lists_added_changed_and_removed_tasks(
    tmp_path: Path, rev: str
) -> None:
    first, _ = two_commits(tmp_path)
    against = first if rev == "sha" else rev
    result = reconciler("plan", "--against", against, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        f'Comparing the working tree with {against}, commit {first[:12]} "initial".',
        *CHANGES,
    ]


def test_plan_against_origin_main_reviews_a_branch_before_it_is_merged(tmp_path: Path) -> None:
    two_commits(tmp_path / "person")
    git(tmp_path, "init", "-q", "--bare", "-b", "main", "server.git")
    remote = (tmp_path / "server.git").as_uri()
    git(tmp_path / "person", "push", "-q", remote, "HEAD~1:refs/heads/main")
    git(tmp_path, "clone", "-q", remote, "reviewer")
    git(tmp_path / "reviewer", "fetch", "-q", str(tmp_path / "person"), "main:feature")
    git(tmp_path / "reviewer", "checkout", "-q", "feature")
    result = reconciler("plan", "--against", "origin/main", tmp_path / "reviewer")
    assert result.returncode == 0, result.stderr
    main = git(tmp_path / "reviewer", "rev-parse", "origin/main").strip()
    assert result.stdout.splitlines() == [
        f'Comparing the working tree with origin/main, commit {main[:12]} "initial".',
        *CHANGES,
    ]


def test_plan_says_it_compares_with_the_branch_head(tmp_path: Path) -> None:
    _, second = two_commits(tmp_path)
    result = reconciler("plan", tmp_path)
    assert result.stdout.splitlines() == [
        f'Comparing the working tree with HEAD, commit {second[:12]} "second".',
        "No changes: the running schedule matches the config set.",
    ]


def test_plan_shows_a_hostile_commit_subject_escaped_and_cut(tmp_path: Path) -> None:
    init_repo(tmp_path, configset.base_files())
    git(tmp_path, "commit", "-q", "--allow-empty", "-m", "\x1b]0;owned\x07" + "x" * 200)
    result = reconciler("plan", tmp_path)
    header = result.stdout.splitlines()[0]
    assert "\x1b" not in header
    assert '"\\x1b]0;owned\\x07xxx' in header
    assert header.endswith('xxx...".')
    assert len(header) < 140


def test_plan_against_the_head_itself_has_nothing_to_do(tmp_path: Path) -> None:
    two_commits(tmp_path)
    result = reconciler("plan", "--against", "main", tmp_path)
    assert result.stdout.splitlines()[1:] == ["No changes: main matches the config set."]


def test_plan_before_the_first_commit_says_nothing_is_committed(tmp_path: Path) -> None:
    git(tmp_path, "init", "-q", "-b", "main")
    (tmp_path / "users.yaml").write_text(configset.USERS)
    result = reconciler("plan", tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == (
        "Comparing the working tree with an empty config set: nothing is committed yet."
    )


@pytest.mark.parametrize("rev", ["no-such-branch", "HEAD~5", "origin/main", "--all"])
def test_plan_against_an_unknown_revision_is_one_sentence_and_exit_2(
    tmp_path: Path, rev: str
) -> None:
    two_commits(tmp_path)
    result = reconciler("plan", f"--against={rev}", tmp_path)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.splitlines() == [f"reconciler: {rev!r} is not a commit in {tmp_path}"]


# --- pre-commit ---------------------------------------------------------------------------------


def _hook() -> dict[str, object]:
    (hook,) = yaml.safe_load((PROJECT / ".pre-commit-hooks.yaml").read_text())
    assert isinstance(hook, dict)
    return hook


def test_the_pre_commit_manifest_is_valid_for_pre_commit_itself() -> None:
    pre_commit = Path(sys.executable).parent / "pre-commit"
    result = subprocess.run(
        [str(pre_commit), "validate-manifest", str(PROJECT / ".pre-commit-hooks.yaml")],
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    hook = _hook()
    assert (hook["id"], hook["entry"], hook["language"]) == (
        "reconciler-validate",
        "reconciler validate",
        "python",
    )
    assert hook["pass_filenames"] is False


def run_hook(repo: Path) -> subprocess.CompletedProcess[str]:
    """The hook's entry as pre-commit runs it: in the repository's root, no file names, with the
    package's console script on PATH."""
    argv = shlex.split(str(_hook()["entry"]))
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    program = shutil.which(argv[0], path=path)
    assert program is not None
    return subprocess.run(
        [program, *argv[1:]], cwd=repo, capture_output=True, text=True, check=False, timeout=120
    )


def test_the_pre_commit_hook_validates_a_scaffolded_repository(tmp_path: Path, home: Path) -> None:
    repo = init(tmp_path / "config", home)
    (repo / ".pre-commit-config.yaml").write_text("repos: []\n")  # hidden: not config
    result = run_hook(repo)
    assert result.returncode == 0, result.stdout
    assert "valid: 4 files" in result.stderr


def test_the_pre_commit_hook_fails_a_broken_task_with_its_line(tmp_path: Path, home: Path) -> None:
    repo = init(tmp_path / "config", home)
    task = repo / TASK_FILE
    task.write_text(task.read_text().replace('time: "03:00"', "time: 03.00"))
    result = run_hook(repo)
    assert result.returncode == 1
    assert result.stdout.startswith(f"{TASK_FILE}:15: schedule.time: time must be HH:MM")
