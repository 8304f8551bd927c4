"""Backup benchmark: a files backup of a generated tree over loopback SSH, against OpenSSH.

For each tree size (default about 250 MB and 1 GB, mostly incompressible random files of mixed
sizes plus some compressible text), in the same run and alternating, round after round, two pairs
that do the same work:
- **ssh tar** (the issue's baseline): `ssh -p P -i KEY root@127.0.0.1 'tar cf - -C DIR .' > file`,
  against **ours, compression none**: a real `Runner` run of a files task with
  `storage.compression: none` (Fabric/paramiko executor, the real command from reconciler.commands,
  local destination with its fsync and rename, history and rotation), timed from `request_run` to
  the end of the run. Rotation keeps everything here: each stored backup is deleted after its run,
  outside the timing, as OpenSSH's output is (the time that deletion takes, which rotation adds to
  a real run, is printed apart);
- **ssh tar|zstd**: `ssh ... 'tar cf - -C DIR . | zstd -q -c -3' > file`, against **ours, zstd**
  (the default `compression: zstd`, level 3), timed the same way.
Each OpenSSH output file is then fsynced and that time reported apart ("+fsync"): our local
destination fsyncs every backup before renaming it, a shell redirect does not. Medians of every
variant, throughput (tree bytes / s) and ratios (baseline time / our time) are printed, with the
peak RSS of the process that ran our backups: one fresh process per tree size, which reports
VmHWM from /proc/self/status and ru_maxrss, and its RSS before the first run.

Trees are generated once under /var/tmp/reconciler-bench-backup-v2 and reused.

Run: .venv/bin/python -m bench.bench_backup [--sizes-mb 250 1024] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from tests.servers import SshServer, start_sshd

CACHE = Path("/var/tmp/reconciler-bench-backup-v2")
TEXT_SHARE = 0.1  # of the tree's bytes: compressible log-like text
SMALL_SHARE = 0.05  # of the tree's bytes: random files of 512 B to 64 KiB
SMALL_FILE, MEDIUM_FILE, MAX_FILE = 512, 64 << 10, 16 << 20
MB = 1_000_000


def _text(rng: random.Random, size: int) -> bytes:
    """Log-like lines: zstd -3 shrinks them several times over."""
    services = ("api", "worker", "cron", "auth", "billing", "search")
    statuses = (200, 200, 200, 201, 204, 301, 404, 500)
    lines, length = [], 0
    while length < size:
        line = (
            f"2024-05-{rng.randint(1, 28):02d}T{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:"
            f"{rng.randint(0, 59):02d}Z host{rng.randint(1, 40)} {rng.choice(services)}"
            f"[{rng.randint(100, 99999)}]: request {rng.getrandbits(32):08x} "
            f"took {rng.randint(1, 900)} ms status {rng.choice(statuses)}\n"
        )
        lines.append(line)
        length += len(line)
    return "".join(lines).encode()[:size]


def generate(tree: Path, total: int) -> None:
    """Text, then many small random files, then random files of log-uniform sizes to 16 MiB."""
    rng = random.Random(total)
    text_budget = int(total * TEXT_SHARE)
    small_budget = text_budget + int(total * SMALL_SHARE)
    written = 0
    index = 0
    while written < total:
        folder = tree / f"d{index % 16:02d}" / f"e{index % 5}"
        folder.mkdir(parents=True, exist_ok=True)
        if written < text_budget:
            size = min(rng.randint(64 << 10, 4 << 20), text_budget - written)
            (folder / f"log{index:05d}.txt").write_bytes(_text(rng, size))
        else:
            low, high = (
                (SMALL_FILE, MEDIUM_FILE) if written < small_budget else (MEDIUM_FILE, MAX_FILE)
            )
            size = int(2 ** rng.uniform(low.bit_length() - 1, high.bit_length() - 1))
            size = max(1, min(size, total - written))
            (folder / f"blob{index:05d}.bin").write_bytes(rng.randbytes(size))
        written += size
        index += 1


def tree_for(size_mb: int) -> tuple[Path, int, int]:
    """The tree of about `size_mb` MB (generated unless already complete); its bytes and files."""
    tree = CACHE / f"tree-{size_mb}MB"
    marker = CACHE / f"tree-{size_mb}MB.complete"
    if not marker.exists():
        subprocess.run(["rm", "-rf", str(tree)], check=True)
        tree.mkdir(parents=True)
        print(f"generating {tree} ...", file=sys.stderr, flush=True)
        # In a separate process: a child's ru_maxrss starts from its parent's RSS at fork.
        subprocess.run(
            [sys.executable, "-m", "bench.bench_backup", "--generate", str(tree), str(size_mb)],
            check=True,
        )
        marker.touch()
    files = [path for path in tree.rglob("*") if path.is_file()]
    return tree, sum(path.stat().st_size for path in files), len(files)


# --- the process that runs our backups --------------------------------------------------------


class _Clock:
    def now(self) -> datetime:
        return datetime.now(UTC)


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} missing from /proc/self/status")


def child(server: dict[str, Any], tree: Path, scratch: Path) -> None:
    """Run one backup per `run <compression>` line on stdin; report timings, then peak RSS on
    `quit`."""
    # Imported here, so the driver stays small and the RSS below is the backup process's own.
    from reconciler.backup import BackupPipeline
    from reconciler.models import Compression, Storage
    from reconciler.runner import Runner
    from reconciler.secrets import Secrets
    from reconciler.state.sqlite import SqliteStateStore
    from tests.runs import files_task

    sshd = SshServer(
        server["host"],
        server["port"],
        server["username"],
        Path(server["private_key"]),
        Path(server["known_hosts"]),
        server["host_key_line"],
        Path(server["directory"]),
    )
    history = SqliteStateStore(scratch / "history.sqlite")
    secrets, clock = Secrets(scratch / "secrets.json", {}), _Clock()
    pipeline = BackupPipeline(runs=history.runs, secrets=secrets, clock=clock)
    runner = Runner(pipeline, runs=history.runs, clock=clock)
    tasks, destinations = {}, {}
    for task_id, compression in enumerate(Compression, start=1):
        destination = scratch / f"destination-{compression.value}"
        destination.mkdir()
        # Rotation runs (it lists the destination) but keeps everything: the old backup is deleted
        # below, outside the timed run, as the driver deletes OpenSSH's output outside its timing.
        storage = Storage(max_backups=0, compression=compression)
        tasks[compression.value] = files_task(
            sshd, destination, tree, task_id=task_id, storage=storage
        )
        destinations[compression.value] = destination
    rss_before_kb = _status_kb("VmRSS")
    for line in sys.stdin:
        if line.strip() == "quit":
            break
        name = line.split()[1]
        task = tasks[name]
        started = time.perf_counter()
        if runner.request_run(task).value != "accepted":
            raise RuntimeError("the run was not accepted")
        runner.wait(task.id)
        seconds = time.perf_counter() - started
        record = history.runs.latest_run(task.id)
        if record is None or record.status.value != "successful" or record.backup_name is None:
            raise RuntimeError(f"the backup run failed: {record}")
        deleting = time.perf_counter()
        (destinations[name] / record.backup_name).unlink()
        delete_seconds = time.perf_counter() - deleting
        print(
            json.dumps({"seconds": seconds, "size": record.size, "delete_seconds": delete_seconds}),
            flush=True,
        )
    asyncio.run(runner.close())
    print(
        json.dumps(
            {
                "rss_before_mb": rss_before_kb / 1024,
                "vmhwm_mb": _status_kb("VmHWM") / 1024,
                "ru_maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            }
        ),
        flush=True,
    )


# --- the driver ---------------------------------------------------------------------------------


# Each pair: (our variant: the task's compression, OpenSSH's remote command given the tree).
PAIRS = {
    "none": "tar cf - -C {tree} .",
    "zstd": "tar cf - -C {tree} . | zstd -q -c -3",
}
LABELS = {"none": "ssh tar", "zstd": "ssh tar|zstd"}


@dataclass
class SizeResult:
    size_mb: int
    tree_bytes: int
    files: int
    ours: dict[str, list[float]]  # by compression
    openssh: dict[str, list[float]]  # by the compression of the pair
    durable: dict[str, list[float]]  # openssh plus an fsync of its output, as ours does
    sizes: dict[str, tuple[int, int]]  # (ours, openssh) output bytes
    deletes: list[float]  # seconds to delete one of our stored backups (outside the timing)
    rss: dict[str, float]


def _openssh(sshd: SshServer, remote: str, output: Path) -> tuple[float, float]:
    """Seconds for `ssh ... remote > output`, then seconds to fsync that file."""
    argv = [
        "ssh",
        "-p",
        str(sshd.port),
        "-i",
        str(sshd.private_key),
        "-o",
        f"UserKnownHostsFile={sshd.known_hosts}",
        "-o",
        "StrictHostKeyChecking=yes",
        "-o",
        "BatchMode=yes",
        f"{sshd.username}@{sshd.host}",
        remote,
    ]
    started = time.perf_counter()
    with output.open("wb") as sink:
        subprocess.run(argv, stdout=sink, check=True)
        done = time.perf_counter()
        os.fsync(sink.fileno())
    return done - started, time.perf_counter() - done


def _ask(process: subprocess.Popen[str], line: str) -> dict[str, Any]:
    stdin: IO[str] | None = process.stdin
    stdout: IO[str] | None = process.stdout
    if stdin is None or stdout is None:
        raise RuntimeError("the backup process has no pipes")
    stdin.write(line + "\n")
    stdin.flush()
    answer = stdout.readline()
    if not answer:
        raise RuntimeError(f"the backup process exited ({process.wait()}) after {line!r}")
    result: dict[str, Any] = json.loads(answer)
    return result


def measure(sshd: SshServer, size_mb: int, rounds: int) -> SizeResult:
    tree, tree_bytes, files = tree_for(size_mb)
    commands = {
        name: command.format(tree=shlex.quote(str(tree))) for name, command in PAIRS.items()
    }
    with tempfile.TemporaryDirectory(prefix="bench-backup-", dir="/var/tmp") as scratch_name:
        scratch = Path(scratch_name)
        output = scratch / "baseline.out"
        server = {
            "host": sshd.host,
            "port": sshd.port,
            "username": sshd.username,
            "private_key": str(sshd.private_key),
            "known_hosts": str(sshd.known_hosts),
            "host_key_line": sshd.host_key_line,
            "directory": str(sshd.directory),
        }
        process = subprocess.Popen(
            [sys.executable, "-m", "bench.bench_backup", "--child", json.dumps(server),
             str(tree), str(scratch)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        _openssh(sshd, commands["none"], output)  # warm the page cache; not counted
        result = SizeResult(size_mb, tree_bytes, files, {}, {}, {}, {}, [], {})
        for round_number in range(1, rounds + 1):
            line = []
            for name, command in commands.items():
                seconds, fsync_seconds = _openssh(sshd, command, output)
                openssh_bytes = output.stat().st_size
                output.unlink()
                run = _ask(process, f"run {name}")
                result.openssh.setdefault(name, []).append(seconds)
                result.durable.setdefault(name, []).append(seconds + fsync_seconds)
                result.ours.setdefault(name, []).append(run["seconds"])
                result.sizes[name] = (run["size"], openssh_bytes)
                result.deletes.append(run["delete_seconds"])
                line.append(
                    f"{LABELS[name]} {seconds:.2f} s (+fsync {seconds + fsync_seconds:.2f} s), "
                    f"ours {run['seconds']:.2f} s"
                )
            print(f"  {size_mb} MB round {round_number}: " + "; ".join(line), file=sys.stderr)
        result.rss = _ask(process, "quit")
        process.wait(timeout=60)
    return result


def report(result: SizeResult) -> None:
    rate = result.tree_bytes / MB

    def row(label: str, values: list[float], size: int | None = None) -> float:
        median = statistics.median(values)
        runs = ", ".join(f"{value:.2f}" for value in values)
        written = f" -> {size:,} bytes" if size is not None else ""
        print(f"  {label:<24} median {median:6.2f} s {rate / median:6.1f} MB/s ({runs}){written}")
        return median

    print(f"tree ~{result.size_mb} MB: {result.tree_bytes:,} bytes in {result.files} files")
    medians: dict[str, float] = {}
    for name in PAIRS:
        ours_bytes, openssh_bytes = result.sizes[name]
        medians[f"ours {name}"] = row(f"ours, compression {name}", result.ours[name], ours_bytes)
        medians[name] = row(LABELS[name], result.openssh[name], openssh_bytes)
        medians[f"{name}+fsync"] = row(f"{LABELS[name]} then fsync", result.durable[name])
    print(
        "  ratio ours (none) vs ssh tar (target >= 0.9): "
        f"{medians['none'] / medians['ours none']:.2f}  (vs ssh tar then fsync: "
        f"{medians['none+fsync'] / medians['ours none']:.2f})"
    )
    print(
        "  ratio ours (zstd) vs ssh tar|zstd:           "
        f"{medians['zstd'] / medians['ours zstd']:.2f}  (vs ssh tar|zstd then fsync: "
        f"{medians['zstd+fsync'] / medians['ours zstd']:.2f})"
    )
    print(
        "  ratio ours (zstd) vs ssh tar:                "
        f"{medians['none'] / medians['ours zstd']:.2f}  (the cost of compressing on these 2 cores)"
    )
    print(
        f"  deleting one stored backup (what rotation adds to a run; timed on neither side): "
        f"median {statistics.median(result.deletes):.2f} s"
    )
    print(
        f"  backup process RSS: {result.rss['rss_before_mb']:.1f} MB before the first run, "
        f"peak VmHWM {result.rss['vmhwm_mb']:.1f} MB, ru_maxrss {result.rss['ru_maxrss_mb']:.1f} MB"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes-mb", type=int, nargs="+", default=[250, 1024])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--generate", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.generate:
        generate(Path(args.generate[0]), int(args.generate[1]) * MB)
        return
    if args.child:
        child(json.loads(args.child[0]), Path(args.child[1]), Path(args.child[2]))
        return
    CACHE.mkdir(parents=True, exist_ok=True)
    for size_mb in args.sizes_mb:
        tree_for(size_mb)
    with (
        tempfile.TemporaryDirectory(prefix="bench-sshd-") as sshd_dir,
        start_sshd(Path(sshd_dir)) as sshd,
    ):
        results = [measure(sshd, size_mb, args.rounds) for size_mb in args.sizes_mb]
    for result in results:
        report(result)


if __name__ == "__main__":
    main()
