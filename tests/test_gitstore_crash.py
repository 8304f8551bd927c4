"""A process killed (SIGKILL) in the middle of a commit leaves nothing a restart cannot repair."""

from __future__ import annotations

import textwrap
from pathlib import Path

from tests.gitrepo import assert_repaired_after_kills, init_repo

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
    assert_repaired_after_kills(repo, _COMMIT_FOREVER, trials=TRIALS, seed=7)
