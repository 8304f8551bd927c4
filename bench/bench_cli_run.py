"""`reconciler run TASK` of a tiny task, beside the same backup by hand.

Starts its own sshd on 127.0.0.1 (`tests.servers.start_sshd`), a config set of one files task
over a directory of three small files (local destination, the default zstd compression), then
alternates, round after round:

- **by hand** (the baseline): `ssh -p P -i KEY root@127.0.0.1 'tar cf - -C DIR . | zstd -q -c -3'
  > file`, a fresh OpenSSH process each time;
- **ours**: `python -m reconciler run 1 --repo R --state S`, a fresh interpreter each time
  (imports, state store, the first reconcile, the SSH connection, the run, its log followed to
  the end), timed from the process's start to its exit.

Prints the medians, their ratio and difference, and the median of the CLI's `--help` alone (the
interpreter and the CLI's own imports).

Run: .venv/bin/python -m bench.bench_cli_run [--rounds 7]
"""

from __future__ import annotations

import argparse
import compileall
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO

import reconciler
from tests import configset
from tests.gitrepo import init_repo
from tests.runs import server_file
from tests.servers import SshServer, start_sshd


def timed(argv: list[str], stdout: IO[bytes] | int = subprocess.DEVNULL) -> float:
    started = time.perf_counter()
    subprocess.run(argv, check=True, stdout=stdout, stderr=subprocess.PIPE)
    return time.perf_counter() - started


def by_hand(sshd: SshServer, source: Path, out: Path) -> float:
    remote = f"tar cf - -C {shlex.quote(str(source))} . | zstd -q -c -3"
    with out.open("wb") as stdout:
        return timed([*sshd.ssh_argv(), remote], stdout=stdout)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    with (
        tempfile.TemporaryDirectory(prefix="bench-cli-run-") as scratch_dir,
        start_sshd(Path(scratch_dir) / "sshd") as sshd,
    ):
        scratch = Path(scratch_dir)
        source = scratch / "data"
        source.mkdir()
        for name, text in {"a.txt": "alpha\n", "b.txt": "beta\n" * 100, "c.txt": "gamma"}.items():
            (source / name).write_text(text)
        repo, state, backups = scratch / "config", scratch / "state.db", scratch / "backups"
        files = {**configset.base_files(), "servers/one.yaml": server_file(sshd)}
        files["destinations/one.yaml"] = configset.destination(1, 1, path=str(backups))
        files["tasks/1.yaml"] = configset.task(
            1, source={"type": "files", "path": str(source)}, storage={"max_backups": 2}
        )
        init_repo(repo, files)
        # As an installed package has it (pip and the Dockerfile compile it): without bytecode,
        # and PYTHONDONTWRITEBYTECODE set as on these machines, every run compiles every module.
        compileall.compile_dir(Path(reconciler.__file__).parent, quiet=1)
        cli = [sys.executable, "-m", "reconciler"]
        run = [*cli, "run", "1", "--repo", str(repo), "--state", str(state)]
        timed(run)  # the state store's creation and the first known_hosts lookups, untimed
        ours, hand, helps = [], [], []
        for _ in range(args.rounds):
            hand.append(by_hand(sshd, source, scratch / "by-hand.tar.zst"))
            ours.append(timed(run))
            helps.append(timed([*cli, "--help"]))
    ours_median, hand_median = statistics.median(ours), statistics.median(hand)
    print(f"rounds                      {args.rounds}")
    print(f"ssh 'tar | zstd' by hand    median {hand_median:.3f} s  (min {min(hand):.3f})")
    print(f"reconciler run 1            median {ours_median:.3f} s  (min {min(ours):.3f})")
    print(f"reconciler --help           median {statistics.median(helps):.3f} s")
    print(f"ours / by hand              {ours_median / hand_median:.2f}")
    print(f"ours - by hand              {ours_median - hand_median:.3f} s")


if __name__ == "__main__":
    main()
