"""restic benchmark: a files task on a restic destination over loopback SSH, against a hand pipe.

In the same run, round after round, on a generated tree of `--size-mb` (bench_backup's tree):
- **baseline**: `ssh -p P -i KEY root@127.0.0.1 'tar cf - -C DIR .' | restic backup --stdin
  --stdin-filename NAME --tag task:1` into its own repository;
- **ours**: a real `Runner` run of the files task on a restic destination (Fabric/paramiko
  executor, restic backup --stdin fed from the SSH channel, history and rotation).
Both repositories first take one run of the tree; the timed runs are then of the unchanged tree
(the common case). Reported: medians, the ratio ours / baseline, and the bytes a second run of
the unchanged tree added to our repository (restic's `data_added`, summed from the repository's
size on disk), against the tree's size.

Run: .venv/bin/python -m bench.bench_restic [--size-mb 1024] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import tempfile
import time
from datetime import timedelta
from pathlib import Path

from bench.bench_backup import tree_for
from reconciler.models import ResticDestination, SecretRef
from reconciler.types import RunStatus
from tests.runs import Harness, files_task
from tests.servers import SshServer, start_sshd

PASSWORD = "bench restic password"  # noqa: S105 (a throwaway repository's)


def _size(directory: Path) -> int:
    return sum(path.stat().st_size for path in directory.rglob("*") if path.is_file())


def _baseline(sshd: SshServer, tree: Path, repository: Path) -> float:
    ssh = [
        "ssh", "-p", str(sshd.port), "-i", str(sshd.private_key),
        "-o", f"UserKnownHostsFile={sshd.known_hosts}", "-o", "StrictHostKeyChecking=yes",
        "-o", "BatchMode=yes", f"{sshd.username}@{sshd.host}", f"tar cf - -C {tree} .",
    ]  # fmt: skip
    restic = ["restic", "backup", "--stdin", "--stdin-filename", "site.tar", "--tag", "task:1",
              "-q"]  # fmt: skip
    env = {**os.environ, "RESTIC_REPOSITORY": str(repository), "RESTIC_PASSWORD": PASSWORD}
    started = time.perf_counter()
    producer = subprocess.Popen(ssh, stdout=subprocess.PIPE)
    assert producer.stdout is not None
    consumer = subprocess.Popen(restic, stdin=producer.stdout, env=env)
    producer.stdout.close()
    if producer.wait() != 0 or consumer.wait() != 0:
        raise RuntimeError("ssh tar | restic backup failed")
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-mb", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    tree, tree_bytes, files = tree_for(args.size_mb)
    with tempfile.TemporaryDirectory(prefix="bench-restic-", dir="/var/tmp") as scratch:
        root = Path(scratch)
        with start_sshd(root / "sshd") as sshd:
            ours_repo, base_repo = root / "ours", root / "baseline"
            subprocess.run(
                ["restic", "init", "-q"], check=True,
                env={**os.environ, "RESTIC_REPOSITORY": str(base_repo),
                     "RESTIC_PASSWORD": PASSWORD},
            )  # fmt: skip
            destination = ResticDestination(
                id=1, user_id=1, label="vault", type="restic", repository=str(ours_repo),
                password=SecretRef(env="RESTIC_PW"),
            )  # fmt: skip
            task = files_task(sshd, root / "unused", tree).model_copy(
                update={"destination": destination}
            )
            (root / "state").mkdir()
            rig = Harness(root / "state", {"RESTIC_PW": PASSWORD})
            first_started = time.perf_counter()
            assert rig.run(task) is RunStatus.SUCCESSFUL
            first = time.perf_counter() - first_started
            _baseline(sshd, tree, base_repo)
            ours: list[float] = []
            baseline: list[float] = []
            added: list[int] = []
            for _ in range(args.rounds):
                rig.clock.advance(timedelta(hours=1))
                before = _size(ours_repo)
                started = time.perf_counter()
                assert rig.run(task) is RunStatus.SUCCESSFUL
                ours.append(time.perf_counter() - started)
                added.append(_size(ours_repo) - before)
                baseline.append(_baseline(sshd, tree, base_repo))
    ours_m, base_m = statistics.median(ours), statistics.median(baseline)
    added_m = statistics.median(added)
    print(f"tree: {tree_bytes / 1e6:.0f} MB in {files} files; first run (ours) {first:.2f} s")
    print(f"unchanged tree, median of {args.rounds}: ours {ours_m:.2f} s, "
          f"baseline ssh tar | restic backup --stdin {base_m:.2f} s, "
          f"ratio ours/baseline {ours_m / base_m:.2f} (target <= 1.20)")  # fmt: skip
    print(f"added to the repository by a run of the unchanged tree: {added_m:.0f} bytes = "
          f"{100 * added_m / tree_bytes:.3f}% of the tree (target < 1%)")  # fmt: skip


if __name__ == "__main__":
    main()
