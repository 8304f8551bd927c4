"""A process killed (SIGKILL) in the middle of a commit leaves nothing a restart cannot repair."""

from __future__ import annotations

import random
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from reconciler.gitstore import GitStore
from tests.gitrepo import git, init_repo

TRIALS = 12

_COMMIT_FOREVER = textwrap.dedent(
    """
    import sys
    from datetime import UTC, datetime
    from pathlib import Path
    from reconciler.gitstore import Author, GitStore

    store = GitStore(Path(sys.argv[1]))
    author = Author("api", "api@example.com")
    for number in range(1_000_000):
        body = f"id: 1\\nlabel: edit {number}\\n" + "# padding\\n" * 20_000
        writes = {"tasks/1.yaml": body.encode(), f"tasks/new-{number}.yaml": b"id: 2\\n"}
        store.commit(writes, author, f"edit {number}", datetime.now(UTC), parent=store.head())
        print(number, flush=True)
    """
)


def test_a_commit_killed_at_any_point_is_repaired_to_a_clean_work_tree(tmp_path: Path) -> None:
    repo = tmp_path / "config"
    init_repo(repo, {"tasks/1.yaml": "id: 1\n"})
    chance = random.Random(7)
    for trial in range(TRIALS):
        with subprocess.Popen(
            [sys.executable, "-c", _COMMIT_FOREVER, str(repo)], stdout=subprocess.PIPE
        ) as child:
            assert child.stdout is not None
            child.stdout.readline()  # one commit made: the store is warm
            time.sleep(chance.uniform(0, 0.05))
            child.kill()

        GitStore(repo).repair_interrupted_commit()

        status = git(repo, "status", "--porcelain", "--untracked-files=all")
        assert status == "", f"trial {trial}: {status}"
        assert not (repo / ".git/index.lock").exists()
        git(repo, "fsck", "--no-progress")
