"""The `reconciler` command as a person uses it: exit codes, output, and real runs."""

from __future__ import annotations

import filecmp
import os
import queue
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tests import configset
from tests.gitrepo import init_repo
from tests.runs import postgres_database, server_file
from tests.servers import BlockedDump, PostgresServer, SshServer

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "tasks"


def reconciler(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "reconciler", *map(str, args)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)


def test_validate_accepts_the_example_config_set() -> None:
    result = reconciler("validate", EXAMPLES)
    assert result.returncode == 0
    assert result.stdout == ""
    assert "valid: 14 files, 2 users, 3 servers, 3 destinations" in result.stderr


def test_validate_for_a_cluster_warns_of_each_local_destination_with_its_file() -> None:
    result = reconciler("validate", "--cluster", EXAMPLES)
    assert result.returncode == 0
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert warnings, result.stderr
    assert all("is type local: in a cluster" in line for line in warnings)
    assert all(line.startswith("warning: destinations/") for line in warnings)


def test_validate_without_a_cluster_warns_of_no_local_destination() -> None:
    assert "warning:" not in reconciler("validate", EXAMPLES).stderr


def test_validate_prints_one_located_line_per_problem_and_fails(tmp_path: Path) -> None:
    write(tmp_path, configset.base_files())
    write(tmp_path, {"tasks/1.yaml": configset.task(1).replace("time: 02:30", "time: 10.30")})
    write(tmp_path, {"tasks/2.yaml": configset.task(2, remote_server_id=9)})
    result = reconciler("validate", tmp_path)
    assert result.returncode == 1
    assert result.stdout.splitlines() == [
        "tasks/1.yaml:11: schedule.time: time must be a quoted string in HH:MM form, got 10.3; "
        'write it with quotes, for example time: "10:30"',
        "tasks/2.yaml:4: remote_server_id: remote server 9 is not defined",
    ]


def test_validate_reports_a_duplicate_key_with_the_line_of_the_duplicate(tmp_path: Path) -> None:
    write(tmp_path, configset.base_files())
    write(tmp_path, {"tasks/1.yaml": configset.task(1) + "label: last wins?\n"})
    result = reconciler("validate", tmp_path)
    assert result.returncode == 1
    assert result.stdout.splitlines() == [
        "tasks/1.yaml:12: (file): duplicate key 'label' (first given on line 3)"
    ]


def test_plan_does_not_apply_a_file_with_a_duplicate_key(tmp_path: Path) -> None:
    init_repo(tmp_path, {**configset.base_files(), "tasks/1.yaml": configset.task(1)})
    write(tmp_path, {"tasks/1.yaml": configset.task(1) + "label: last wins?\n"})
    result = reconciler("plan", tmp_path)
    assert result.returncode == 1
    assert "tasks/1.yaml:12: (file): duplicate key 'label'" in result.stderr
    assert "will change" not in result.stdout


def test_validate_reports_a_linked_file_and_never_reads_it(tmp_path: Path) -> None:
    root = tmp_path / "config"
    write(root, {**configset.base_files(), "tasks/1.yaml": configset.task(1)})
    secret = tmp_path / "shadow"
    secret.write_text("root:$6$saltsalt$hash:19000:0:99999:7:::\n")
    (root / "tasks/shadow.yaml").symlink_to(secret)
    result = reconciler("validate", root)
    assert result.returncode == 1
    assert "saltsalt" not in result.stdout + result.stderr
    assert result.stdout.splitlines() == [
        "tasks/shadow.yaml: (file): a symbolic link: links are never followed, in the work tree"
        " or in a commit, so nothing it points to is applied; commit the file itself"
    ]


def test_validate_reports_a_linked_folder_and_reads_nothing_in_it(tmp_path: Path) -> None:
    root = tmp_path / "config"
    write(root, configset.base_files())
    write(tmp_path / "elsewhere", {"9.yaml": "not: a task\n"})
    (root / "tasks").symlink_to(tmp_path / "elsewhere")
    result = reconciler("validate", root)
    assert result.returncode == 1
    (line,) = result.stdout.splitlines()
    assert line.startswith("tasks: (file): a symbolic link")


def test_plan_never_plans_a_task_behind_a_link(tmp_path: Path) -> None:
    init_repo(tmp_path / "config", {**configset.base_files(), "tasks/1.yaml": configset.task(1)})
    (tmp_path / "outside.yaml").write_text(configset.task(9))
    (tmp_path / "config/tasks/9.yaml").symlink_to(tmp_path / "outside.yaml")
    result = reconciler("plan", tmp_path / "config")
    assert result.returncode == 1
    assert "task 9" not in result.stdout
    assert result.stderr.startswith("tasks/9.yaml: (file): a symbolic link")


def test_validate_reports_a_file_over_the_size_limit(tmp_path: Path) -> None:
    write(tmp_path, {**configset.base_files(), "tasks/1.yaml": configset.task(1)})
    with (tmp_path / "tasks/1.yaml").open("ab") as file:
        file.truncate(1024 * 1024 + 1)
    result = reconciler("validate", tmp_path)
    assert result.returncode == 1
    assert result.stdout.splitlines() == [
        "tasks/1.yaml: (file): the file is 1,048,577 bytes, over the limit of 1,048,576 bytes"
        " (1 MiB) for a config file; it is not read"
    ]


def test_validate_of_a_missing_directory_is_one_sentence_not_a_traceback(tmp_path: Path) -> None:
    result = reconciler("validate", tmp_path / "nowhere")
    assert result.returncode == 2
    assert result.stderr.startswith("reconciler: ")
    assert "Traceback" not in result.stderr


def test_plan_shows_what_committing_the_working_tree_would_change(tmp_path: Path) -> None:
    files = {**configset.base_files(), "tasks/1.yaml": configset.task(1)}
    files["tasks/3.yaml"] = configset.task(3)
    init_repo(tmp_path, files)
    write(tmp_path, {"tasks/1.yaml": configset.task(1, label="renamed")})
    write(tmp_path, {"tasks/2.yaml": configset.task(2)})
    (tmp_path / "tasks/3.yaml").unlink()
    result = reconciler("plan", tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[1:] == [
        "+ task 2 (task 2) will be added",
        "~ task 1 (renamed) will change:",
        "    task.label: 'task 1' -> 'renamed'",
        "- task 3 (task 3) will be removed",
        "Plan: 1 to add, 1 to change, 1 to remove.",
    ]


def test_plan_of_a_clean_work_tree_has_nothing_to_do(tmp_path: Path) -> None:
    init_repo(tmp_path, {**configset.base_files(), "tasks/1.yaml": configset.task(1)})
    result = reconciler("plan", tmp_path)
    assert result.stdout.splitlines()[1:] == [
        "No changes: the running schedule matches the config set."
    ]


def test_a_token_is_printed_once_listed_without_its_value_and_revoked(tmp_path: Path) -> None:
    state = tmp_path / "state.db"
    created = reconciler(
        "token", "create", "--state", state, "--user-id", "2", "--name", "ci",
        "--ability", "view-backup-tasks",
    )  # fmt: skip
    token = created.stdout.strip()
    assert token.startswith("rk_")
    listed = reconciler("token", "list", "--state", state).stdout
    assert "user 2\tci\tview-backup-tasks" in listed
    assert token not in listed
    assert reconciler("token", "revoke", "1", "--state", state).returncode == 0
    assert reconciler("token", "list", "--state", state).stdout == ""
    assert reconciler("token", "revoke", "1", "--state", state).returncode == 2


def test_run_backs_up_for_real_and_restore_brings_the_files_back(
    tmp_path: Path, sshd: SshServer
) -> None:
    source = tmp_path / "data"
    write(source, {"a.txt": "alpha\n", "nested/b.bin": "beta" * 1000, "odd name $x.txt": "'"})
    repo, state, backups = tmp_path / "config", tmp_path / "state.db", tmp_path / "backups"
    server = server_file(sshd)
    files = {**configset.base_files(), "servers/one.yaml": server}
    files["destinations/one.yaml"] = configset.destination(1, 1, path=str(backups))
    files["tasks/1.yaml"] = configset.task(1, source={"type": "files", "path": str(source)})
    init_repo(repo, files)

    run = reconciler("run", "1", "--repo", repo, "--state", state)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "successful" in run.stdout.splitlines()[-1]
    (backup,) = backups.iterdir()
    assert backup.name.startswith("backup_1_")

    restored = tmp_path / "restored"
    result = reconciler("restore", "1", "--to", restored, "--repo", repo, "--state", state)
    assert result.returncode == 0, result.stderr
    (top,) = restored.iterdir()
    comparison = filecmp.dircmp(source, top)
    assert comparison.left_only == comparison.right_only == comparison.diff_files == []


@pytest.mark.servers
def test_run_prints_the_log_while_the_backup_is_still_running(
    tmp_path: Path, sshd: SshServer, postgres: PostgresServer, blocked: BlockedDump
) -> None:
    repo, state = tmp_path / "config", tmp_path / "state.db"
    database = postgres_database(postgres)
    server = server_file(sshd, database=database)
    files = {**configset.base_files(), "servers/one.yaml": server}
    files["destinations/one.yaml"] = configset.destination(1, 1, path=str(tmp_path / "backups"))
    files["tasks/1.yaml"] = configset.task(1, source={"type": "database", "database_name": "slow"})
    init_repo(repo, files)
    lines: queue.Queue[str] = queue.Queue()
    seen: list[str] = []
    with (
        (tmp_path / "stderr.txt").open("w") as stderr,
        subprocess.Popen(
            [sys.executable, "-m", "reconciler", "run", "1", "--repo", repo, "--state", state],
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            env={**os.environ, "PG_PASSWORD": postgres.password},
        ) as process,
    ):
        stdout = process.stdout
        assert stdout is not None

        def read() -> None:
            for line in stdout:
                lines.put(line)

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        try:
            while not any("streaming database" in line for line in seen):
                seen.append(lines.get(timeout=60))  # queue.Empty: nothing printed while running
            assert process.poll() is None  # the dump waits on the lock: the run is still going
            blocked.release()
            process.wait(timeout=120)
            reader.join(timeout=10)
        finally:
            process.kill()
    while not lines.empty():
        seen.append(lines.get_nowait())
    output = "".join(seen)
    assert process.returncode == 0, output
    assert output.count("connecting to") == 1  # each line printed once, however often it polled
    assert output.splitlines()[-1].endswith("successful")


def test_run_of_an_unknown_task_is_one_clear_sentence(tmp_path: Path) -> None:
    init_repo(tmp_path / "config", configset.base_files())
    result = reconciler("run", "9", "--repo", tmp_path / "config", "--state", tmp_path / "s.db")
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1] == (
        f"reconciler: task 9 is not in the config set at {tmp_path / 'config'}"
    )
    assert "Traceback" not in result.stderr


def test_a_state_directory_others_can_write_to_is_refused_in_one_sentence(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    result = reconciler("token", "create", "--state", shared / "state.db", "--user-id", "1",
                        "--name", "ci")  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1].startswith(
        f"reconciler: state directory {shared}: other users can write to it (mode 0777)"
    )
    assert list(shared.iterdir()) == []


def test_a_new_state_store_is_private_from_its_first_byte(tmp_path: Path) -> None:
    state = tmp_path / "fresh" / "state.db"
    result = reconciler("token", "create", "--state", state, "--user-id", "1", "--name", "ci")
    assert result.returncode == 0, result.stderr
    assert stat.S_IMODE(state.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(state.stat().st_mode) == 0o600


ONE_OFF = """
import asyncio, sys
from pathlib import Path
from reconciler.daemon import Settings, synced

async def main() -> None:
    async with synced(Settings(repo=Path(sys.argv[1]), state=Path(sys.argv[2]))) as core:
        assert 1 in core.engine.desired.tasks

asyncio.run(main())
print(" ".join(sorted(name for name in sys.argv[3:] if name in sys.modules)))
"""


def test_a_one_off_command_loads_neither_the_http_api_nor_the_ref_watch(tmp_path: Path) -> None:
    """What `reconciler run` and `restore` build; importing FastAPI and the API's schemas alone
    took half of `reconciler run`'s second."""
    init_repo(tmp_path / "config", {**configset.base_files(), "tasks/1.yaml": configset.task(1)})
    heavy = ["fastapi", "uvicorn", "starlette", "watchfiles", "apprise", "boto3", "reconciler.api"]
    result = subprocess.run(
        [sys.executable, "-c", ONE_OFF, tmp_path / "config", tmp_path / "state.db", *heavy],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""
