"""`reconciler`: serve, validate, plan, run, restore, ls, verify, prune, token. Thin: each command
wires and reports.

Anything a user can get wrong ends in one clear sentence on stderr and a non-zero exit, never a
traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from reconciler.state.location import (
    StateLocation,
    describe_location,
    is_postgres_url,
    state_location,
)
from reconciler.types import ReconcilerError

if TYPE_CHECKING:
    from reconciler.daemon import Core, Settings
    from reconciler.state.runs import RunRecord
    from reconciler.state.tokens import Tokens

_T = TypeVar("_T")
_N = TypeVar("_N", int, float)
# The longest commit subject `plan` shows when it says what it compares with.
SUBJECT_CHARS = 72
# How often `reconciler run` looks for new log lines of the run it follows.
FOLLOW_SECONDS = 0.5
DEFAULT_STATE = state_location(os.environ.get("RECONCILER_STATE", "reconciler-state/state.db"))
ABILITIES = (
    "view-backup-tasks",
    "create-backup-tasks",
    "update-backup-tasks",
    "delete-backup-tasks",
    "run-backup-tasks",
    "*",
)


class UserError(Exception):
    """A problem the user can fix; printed as one sentence."""


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    _configure_logging(args.log_json, args.verbose)
    command: Callable[[argparse.Namespace], int] = args.command
    try:
        return command(args)
    except UserError as exc:
        print(f"reconciler: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="reconciler",
        description="Keeps a fleet of backups running from a git repository of YAML files.",
    )
    parser.add_argument("--log-json", action="store_true", help="log JSON lines instead of text")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug details")
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the daemon: reconcile, schedule, serve the API")
    _repo_option(serve)
    _state_option(serve)
    serve.add_argument("--host", default=os.environ.get("RECONCILER_HOST", "127.0.0.1"))
    serve.add_argument("--port", type=int, default=int(os.environ.get("RECONCILER_PORT", "8080")))
    serve.add_argument(
        "--resync-interval",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="full reconcile every SECONDS even without a file event (default 60)",
    )
    serve.add_argument(
        "--catch-up-deadline",
        type=float,
        default=12.0,
        metavar="HOURS",
        help="at start, run a task once if its last slot was missed less than HOURS ago "
        "(default 12; 0 disables)",
    )
    serve.add_argument(
        "--max-workers", type=int, default=4, help="parallel backup runs (default 4)"
    )
    serve.add_argument(
        "--run-timeout",
        type=float,
        default=6.0,
        metavar="HOURS",
        help="a run still going after HOURS fails (default 6; per task: run_timeout_seconds)",
    )
    serve.add_argument(
        "--connect-timeout",
        type=float,
        default=15.0,
        metavar="SECONDS",
        help="limit for each step of reaching a remote over SSH: TCP connect, SSH banner, key "
        "exchange, authentication, starting the command (default 15)",
    )
    serve.add_argument(
        "--stall-timeout",
        type=float,
        default=600.0,
        metavar="SECONDS",
        help="a backup whose remote command sends nothing for SECONDS fails (default 600; "
        "0 disables)",
    )
    serve.add_argument(
        "--shutdown-grace",
        type=_at_least(float, 0.0),
        default=600.0,
        metavar="SECONDS",
        help="on SIGTERM or SIGINT, let running backups finish for up to SECONDS before "
        "interrupting them (default 600; a second signal interrupts them at once)",
    )
    serve.add_argument(
        "--node-id",
        type=_node_id,
        default=os.environ.get("RECONCILER_NODE_ID"),
        metavar="ID",
        help="this daemon's name among several sharing one state store (env RECONCILER_NODE_ID;"
        " default: the host name when --state is a PostgreSQL URL, else it runs alone)",
    )
    serve.add_argument(
        "--lease",
        type=_at_least(float, 3.0),
        default=60.0,
        metavar="SECONDS",
        help="how long a run's claim lasts without a renewal (renewed every third of it); a"
        " node silent this long is taken for dead and its run taken over (default 60)",
    )
    serve.add_argument("--known-hosts", type=Path, help="known_hosts file for SSH host keys")
    serve.add_argument("--push", action="store_true", help="push API commits to the upstream")
    serve.add_argument(
        "--keep-runs",
        type=_at_least(int, 0),
        default=200,
        metavar="N",
        help="keep each task's N newest runs and their logs (default 200; 0: no limit)",
    )
    serve.add_argument(
        "--keep-run-days",
        type=_at_least(float, 0.0),
        default=90.0,
        metavar="DAYS",
        help="delete runs and their logs older than DAYS (default 90; 0: no limit)",
    )
    serve.add_argument(
        "--max-body-bytes",
        type=_at_least(int, 1),
        metavar="BYTES",
        help="refuse (413) a request body larger than BYTES before reading it (default 1 MiB)",
    )
    _age_identity_option(serve)
    serve.add_argument(
        "--allowed-signers",
        type=Path,
        default=_env_path("RECONCILER_ALLOWED_SIGNERS"),
        metavar="FILE",
        help="apply a new branch head only if its commit is signed by a key of FILE (git's SSH"
        " allowed-signers format); else keep the last verified revision (env"
        " RECONCILER_ALLOWED_SIGNERS)",
    )
    serve.add_argument(
        "--signing-key",
        type=Path,
        default=_env_path("RECONCILER_SIGNING_KEY"),
        metavar="FILE",
        help="sign API commits with this SSH private key (env RECONCILER_SIGNING_KEY)",
    )
    _remote_options(serve)
    serve.set_defaults(command=_serve)

    validate = commands.add_parser("validate", help="check a config set; exit 1 on any problem")
    validate.add_argument("directory", nargs="?", type=Path, default=Path("."))
    validate.add_argument(
        "--cluster",
        action="store_true",
        help="check it as the config set of several daemons (warns of local destinations); "
        "implied when RECONCILER_STATE is a postgresql:// URL",
    )
    validate.set_defaults(command=_validate)

    plan = commands.add_parser(
        "plan", help="show what committing the working tree would change in the running schedule"
    )
    plan.add_argument("directory", nargs="?", type=Path, default=Path("."))
    plan.add_argument(
        "--against",
        metavar="REV",
        help="compare with this git revision instead of the branch head (a pull request's "
        "review: --against origin/main; also a sha, a tag, HEAD~1)",
    )
    plan.set_defaults(command=_plan)

    init = commands.add_parser(
        "init", help="create a new config repository that validate and serve accept as is"
    )
    init.add_argument("directory", type=Path, help="a new or empty directory")
    init.set_defaults(command=_init)

    run = commands.add_parser("run", help="run one backup task now, in the foreground")
    run.add_argument("task_id", type=int)
    _repo_option(run)
    _state_option(run)
    run.add_argument("--known-hosts", type=Path, help="known_hosts file for SSH host keys")
    _age_identity_option(run)
    run.set_defaults(command=_run)

    restore = commands.add_parser("restore", help="fetch, decrypt and unpack a backup")
    restore.add_argument("task_id", type=int)
    restore.add_argument("--run", type=int, dest="run_id", help="the run whose backup to restore")
    restore.add_argument("--to", type=Path, required=True, help="directory to restore into")
    restore.add_argument(
        "--path",
        action="append",
        dest="paths",
        default=[],
        metavar="PATH",
        help="restore only this file or folder, as `reconciler ls` lists it (repeatable)",
    )
    _repo_option(restore)
    _state_option(restore)
    restore.add_argument("--known-hosts", type=Path, help="known_hosts file for SSH host keys")
    _age_identity_option(restore)
    restore.set_defaults(command=_restore)

    listing = commands.add_parser(
        "ls", help="list the files in a files backup: type, size, mtime (UTC), path"
    )
    listing.add_argument("task_id", type=int)
    listing.add_argument(
        "--run", type=int, dest="run_id", help="the run whose backup to list (default: newest)"
    )
    listing.add_argument("--json", action="store_true", help="one JSON object per line")
    _repo_option(listing)
    _state_option(listing)
    listing.add_argument("--known-hosts", type=Path, help="known_hosts file for SSH host keys")
    _age_identity_option(listing)
    listing.set_defaults(command=_ls)

    verify = commands.add_parser(
        "verify", help="prove a backup restorable (checksum, decryption, every file or the dump)"
    )
    verify.add_argument("task_id", type=int)
    verify.add_argument(
        "--run", type=int, dest="run_id", help="the run whose backup to verify (default: newest)"
    )
    _repo_option(verify)
    _state_option(verify)
    verify.add_argument("--known-hosts", type=Path, help="known_hosts file for SSH host keys")
    _age_identity_option(verify)
    verify.set_defaults(command=_verify)

    prune = commands.add_parser(
        "prune", help="apply the task's retention policy (storage.keep) to its destination"
    )
    prune.add_argument("task_id", type=int)
    prune.add_argument(
        "--dry-run", action="store_true", help="print keep or remove for each backup; delete none"
    )
    _repo_option(prune)
    _state_option(prune)
    prune.add_argument("--known-hosts", type=Path, help="known_hosts file for SSH host keys")
    _age_identity_option(prune)
    prune.set_defaults(command=_prune)

    token = commands.add_parser("token", help="manage API tokens")
    tokens = token.add_subparsers(required=True, metavar="ACTION")
    create = tokens.add_parser("create", help="create a token (printed once)")
    create.add_argument("--user-id", type=int, required=True)
    create.add_argument("--name", required=True)
    create.add_argument(
        "--ability",
        action="append",
        choices=ABILITIES,
        dest="abilities",
        help="repeat for several (default *)",
    )
    create.add_argument(
        "--operator",
        action="store_true",
        help="GET /api/sync shows this token every user's config errors and tasks, and files "
        "that belong to no user (users.yaml, files that do not parse)",
    )
    _state_option(create)
    create.set_defaults(command=_token_create)
    listing = tokens.add_parser("list", help="list tokens (never their values)")
    listing.add_argument("--user-id", type=int)
    _state_option(listing)
    listing.set_defaults(command=_token_list)
    revoke = tokens.add_parser("revoke", help="revoke a token by id")
    revoke.add_argument("token_id", type=int)
    _state_option(revoke)
    revoke.set_defaults(command=_token_revoke)

    state = commands.add_parser("state", help="the state store itself")
    state_actions = state.add_subparsers(required=True, metavar="ACTION")
    migrate = state_actions.add_parser(
        "migrate",
        help="move an SQLite state store (runs, logs, tokens, API secrets) into an empty"
        " PostgreSQL one",
    )
    migrate.add_argument("--from", dest="source", type=Path, required=True, metavar="PATH")
    migrate.add_argument("--to", dest="target", required=True, metavar="URL")
    _age_identity_option(migrate)
    migrate.set_defaults(command=_state_migrate)

    secret = commands.add_parser("secret", help="age-encrypted secrets for the config set")
    secret_actions = secret.add_subparsers(required=True, metavar="ACTION")
    encrypt = secret_actions.add_parser(
        "encrypt",
        help="encrypt a secret read on stdin and print the {age: ...} reference to paste",
    )
    encrypt.add_argument(
        "--recipient",
        action="append",
        required=True,
        dest="recipients",
        metavar="AGE_PUBKEY",
        help="an age public key (age1...) or SSH public key that may decrypt it: the daemon's "
        "(age-keygen -y IDENTITY), and yours if you want to read it back; repeat for several",
    )
    encrypt.set_defaults(command=_secret_encrypt)
    return parser


def _at_least(kind: Callable[[str], _N], minimum: _N) -> Callable[[str], _N]:
    def parse(text: str) -> _N:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if not value >= minimum:  # also refuses nan
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {text}")
        return value

    return parse


def _remote_options(serve: argparse.ArgumentParser) -> None:
    serve.add_argument(
        "--remote",
        default=os.environ.get("RECONCILER_REMOTE") or None,
        metavar="URL",
        help="follow the branch of this git remote; --repo is the daemon's own clone, made on "
        "first start (env RECONCILER_REMOTE)",
    )
    serve.add_argument("--branch", default="main", help="the remote's branch (default main)")
    serve.add_argument(
        "--fetch-interval",
        type=_positive,
        default=60.0,
        metavar="SECONDS",
        help="fetch from the remote every SECONDS (default 60)",
    )
    serve.add_argument(
        "--webhook-secret-file",
        type=Path,
        metavar="FILE",
        help="accept POST /api/hooks/git signed with the secret in FILE "
        "(or env RECONCILER_WEBHOOK_SECRET)",
    )


def _positive(text: str) -> float:
    value = _at_least(float, 0.0)(text)
    if value == 0:
        raise argparse.ArgumentTypeError("must be more than 0")
    return value


def _webhook_secret(args: argparse.Namespace) -> str | None:
    """The webhook's secret, from --webhook-secret-file (its first line) or the environment."""
    secret: str | None
    if args.webhook_secret_file is not None:
        try:
            lines = args.webhook_secret_file.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise UserError(f"cannot read the webhook secret: {exc}") from exc
        secret = lines[0].strip() if lines else ""
        where = str(args.webhook_secret_file)
    else:
        secret = os.environ.get("RECONCILER_WEBHOOK_SECRET") or None
        where = "RECONCILER_WEBHOOK_SECRET"
    if secret is None:
        return None
    if not secret:
        raise UserError(f"the webhook secret in {where} is empty")
    if args.remote is None:
        raise UserError("a webhook secret needs --remote: the webhook fetches from the remote")
    return secret


def _repo_option(parser: argparse.ArgumentParser) -> None:
    default = os.environ.get("RECONCILER_REPO")
    parser.add_argument(
        "--repo",
        type=Path,
        default=Path(default) if default else None,
        required=default is None,
        help="the config set: a git repository, or a folder inside one (env RECONCILER_REPO)",
    )


def _env_path(name: str) -> Path | None:
    value = os.environ.get(name)
    return Path(value) if value else None


_NODE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def _node_id(value: str) -> str:
    if not _NODE_ID.match(value):
        raise argparse.ArgumentTypeError(
            f"{value!r} is not a node id: 1 to 64 letters, digits, '.', '_' or '-', starting with"
            " a letter or digit"
        )
    return value


def _state_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--state",
        type=state_location,
        default=DEFAULT_STATE,
        help="SQLite state file, or a postgresql://user@host:port/db URL that several daemons"
        f" share (env RECONCILER_STATE, default {describe_location(DEFAULT_STATE)})",
    )


def _age_identity_option(parser: argparse.ArgumentParser) -> None:
    default = os.environ.get("RECONCILER_AGE_IDENTITY")
    parser.add_argument(
        "--age-identity",
        type=Path,
        default=Path(default) if default else None,
        metavar="FILE",
        help="age identity file (as age-keygen writes it) that decrypts {age: ...} secret "
        "references (env RECONCILER_AGE_IDENTITY)",
    )


def _serve(args: argparse.Namespace) -> int:
    from reconciler.daemon import Settings, serve
    from reconciler.types import DEFAULT_MAX_BODY_BYTES

    settings = Settings(
        repo=args.repo,
        state=args.state,
        host=args.host,
        port=args.port,
        resync_interval=args.resync_interval,
        catch_up_deadline=timedelta(hours=args.catch_up_deadline),
        max_workers=args.max_workers,
        run_timeout=timedelta(hours=args.run_timeout),
        connect_timeout=args.connect_timeout,
        stall_timeout=args.stall_timeout,
        known_hosts=args.known_hosts,
        push=args.push,
        keep_runs=args.keep_runs,
        keep_run_age=timedelta(days=args.keep_run_days) if args.keep_run_days else None,
        max_body_bytes=args.max_body_bytes or DEFAULT_MAX_BODY_BYTES,
        age_identity=args.age_identity,
        allowed_signers=args.allowed_signers,
        signing_key=args.signing_key,
        remote=args.remote,
        branch=args.branch,
        fetch_interval=args.fetch_interval,
        webhook_secret=_webhook_secret(args),
        shutdown_grace=args.shutdown_grace,
        node_id=args.node_id,
        lease=timedelta(seconds=args.lease),
    )
    _guarded(lambda: asyncio.run(serve(settings)))
    return 0


def _validate(args: argparse.Namespace) -> int:
    from reconciler.desired import DesiredState, build_desired, node_local_destinations
    from reconciler.loader import parse_directory

    files = _guarded(lambda: parse_directory(args.directory))
    desired = build_desired(files, DesiredState())
    for error in desired.errors:
        print(error.render())
    summary = (
        f"{len(files)} files, {len(desired.users)} users, {len(desired.servers)} servers, "
        f"{len(desired.destinations)} destinations, {len(desired.notifications)} notification "
        f"streams, {len(desired.tasks)} tasks"
    )
    if desired.errors:
        print(f"{len(desired.errors)} problem(s) in {summary}", file=sys.stderr)
        return 1
    print(f"valid: {summary}", file=sys.stderr)
    for note in _missing_key_notes(desired):
        print(note, file=sys.stderr)
    if args.cluster or is_postgres_url(os.environ.get("RECONCILER_STATE", "")):
        for warning in node_local_destinations(desired):
            print(f"warning: {warning}", file=sys.stderr)
    return 0


def _missing_key_notes(desired: Any) -> list[str]:
    """A note for each SSH key file a valid config names that is not on this machine: not an
    error (validate also runs on laptops and in CI), but the reason a first run here would fail."""
    from reconciler.documents import Kind

    notes = []
    for kind, objects in ((Kind.SERVER, desired.servers), (Kind.DESTINATION, desired.destinations)):
        for object_id, item in sorted(objects.items()):
            key = getattr(item, "private_key", None)
            if key is not None and not Path(key).expanduser().is_file():
                notes.append(
                    f"note: {desired.owners[kind][object_id]}: private_key {key} is not a file "
                    "on this machine; a run from here cannot log in until it exists (ssh-keygen "
                    f"-t ed25519 -f {key}, then add the .pub file to the remote's authorized_keys)"
                )
    return notes


def _plan(args: argparse.Namespace) -> int:
    from reconciler.desired import build_desired
    from reconciler.loader import parse_directory
    from reconciler.plan import make_plan, render_plan

    baseline, committed = _committed_state(args.directory, args.against)
    print(baseline.sentence)
    working = build_desired(_guarded(lambda: parse_directory(args.directory)), committed)
    for error in working.errors:
        print(error.render(), file=sys.stderr)
    unchanged = args.against or "the running schedule"
    for line in render_plan(make_plan(working.tasks, committed.tasks), unchanged):
        print(line)
    return 1 if working.errors else 0


@dataclass(frozen=True, slots=True)
class _Baseline:
    """What a plan compares the working tree with: a commit, or nothing committed yet."""

    rev: str
    commit: str | None
    subject: str = ""

    @property
    def sentence(self) -> str:
        from reconciler.documents import printable_path

        if self.commit is None:
            return "Comparing the working tree with an empty config set: nothing is committed yet."
        # Anyone who can push writes the subject: shown escaped and cut, never as terminal codes.
        subject = printable_path(self.subject)
        subject = subject if len(subject) <= SUBJECT_CHARS else f"{subject[: SUBJECT_CHARS - 3]}..."
        commit = f'commit {self.commit[:12]} "{subject}"'
        return f"Comparing the working tree with {printable_path(self.rev)}, {commit}."


def _committed_state(directory: Path, against: str | None = None) -> tuple[_Baseline, Any]:
    """The revision compared with and its desired state: `against`, else what the daemon runs,
    the branch head (empty before any commit)."""
    from reconciler.desired import DesiredState, build_desired
    from reconciler.documents import is_ignored
    from reconciler.engine import parse_entries
    from reconciler.gitstore import GitError, GitStore

    try:
        store = GitStore(directory)
        rev = against if against is not None else store.head()
        if rev is None:
            return _Baseline("HEAD", None), DesiredState()
        commit, subject = store.commit_summary(rev)
        entries = {p: e for p, e in store.list_entries(commit).items() if not is_ignored(p)}
    except GitError as exc:
        raise UserError(str(exc)) from exc
    baseline = _Baseline(against or "HEAD", commit, subject)
    return baseline, build_desired(parse_entries(store, entries), DesiredState())


def _init(args: argparse.Namespace) -> int:
    from reconciler.repoinit import init_config_repo

    created = _guarded(lambda: init_config_repo(args.directory))
    print(
        f"Created the config repository {created.root} (branch main, commit {created.commit[:12]}):"
    )
    for path in created.files:
        print(f"  {path}")
    if not created.author_configured:
        print(
            "git had no author configured, so this repository commits as "
            f"{created.host.person_name} <{created.host.person_email}> (git config user.name "
            "and user.email change it)."
        )
    if not created.host.key_exists:
        print(
            f"No SSH key found: create {created.host.private_key} (ssh-keygen -t ed25519 -f "
            f"{created.host.private_key}) and add its .pub file to ~{created.host.login}/.ssh/"
            "authorized_keys before the first run."
        )
    print(f"Next: reconciler validate {args.directory}; reconciler serve --repo {args.directory}")
    return 0


def _run(args: argparse.Namespace) -> int:
    from reconciler.daemon import Settings

    settings = Settings(
        repo=args.repo,
        state=args.state,
        known_hosts=args.known_hosts,
        age_identity=args.age_identity,
    )
    succeeded = _guarded(lambda: asyncio.run(_run_once(settings, args.task_id)))
    return 0 if succeeded else 1


async def _run_once(settings: Settings, task_id: int) -> bool:
    """One task of the branch head, now, in the foreground, its log printed as it is stored;
    True on success."""
    from reconciler.daemon import start_run, synced
    from reconciler.types import RunStatus

    async with synced(settings) as daemon:
        start_run(daemon, task_id, trigger="cli")
        run = await _follow(daemon, task_id)
        print(f"run {run.id}: {run.status}" + (f" ({run.reason})" if run.reason else ""))
        return run.status is RunStatus.SUCCESSFUL


async def _follow(daemon: Core, task_id: int) -> RunRecord:
    """Print the task's run's log lines as they are stored, until it ends; return the finished run.

    `start_run` records the run before it accepts it, so the task's latest run is this one.
    Each look reads only the lines after the last one printed.
    """
    run = await asyncio.to_thread(daemon.state.runs.latest_run, task_id)
    assert run is not None
    printed = 0
    while True:
        try:
            await asyncio.to_thread(daemon.runner.wait, task_id, FOLLOW_SECONDS)
            finished = True
        except TimeoutError:
            finished = False
        while True:
            lines, printed = await asyncio.to_thread(daemon.state.runs.log_after, run.id, printed)
            print("".join(f"{line}\n" for line in lines), end="", flush=True)
            if not lines:
                break
        if finished:
            ended = await asyncio.to_thread(daemon.state.runs.run, run.id)
            assert ended is not None
            return ended


def _restore(args: argparse.Namespace) -> int:
    from reconciler.daemon import Settings, restore_backup

    settings = Settings(
        repo=args.repo,
        state=args.state,
        known_hosts=args.known_hosts,
        age_identity=args.age_identity,
    )
    where = _guarded(
        lambda: asyncio.run(
            restore_backup(settings, args.task_id, args.run_id, args.to, args.paths)
        )
    )
    print(f"restored task {args.task_id} to {where}")
    return 0


def _ls(args: argparse.Namespace) -> int:
    from reconciler.daemon import Settings, list_files
    from reconciler.listing import Entry

    settings = Settings(
        repo=args.repo,
        state=args.state,
        known_hosts=args.known_hosts,
        age_identity=args.age_identity,
    )

    def emit(entry: Entry) -> None:
        print(entry.json() if args.json else entry.line())

    _guarded(lambda: asyncio.run(list_files(settings, args.task_id, args.run_id, emit)))
    return 0


def _verify(args: argparse.Namespace) -> int:
    from reconciler.daemon import Settings, verify_backup

    settings = Settings(
        repo=args.repo,
        state=args.state,
        known_hosts=args.known_hosts,
        age_identity=args.age_identity,
    )
    result = _guarded(lambda: asyncio.run(verify_backup(settings, args.task_id, args.run_id)))
    if result.problems:
        print(f"reconciler: {result.summary()}", file=sys.stderr)
        return 1
    print(result.summary())
    return 0


def _prune(args: argparse.Namespace) -> int:
    from reconciler.daemon import Settings, prune_backups

    settings = Settings(
        repo=args.repo,
        state=args.state,
        known_hosts=args.known_hosts,
        age_identity=args.age_identity,
    )
    decisions = _guarded(
        lambda: asyncio.run(prune_backups(settings, args.task_id, apply=not args.dry_run))
    )
    for decision in decisions:
        verdict = "keep" if decision.keep else "remove"
        print(f"{verdict:<6}  {decision.name}  {', '.join(decision.reasons)}".rstrip())
    removed = sum(not decision.keep for decision in decisions)
    kept = len(decisions) - removed
    done = "would remove" if args.dry_run else "removed"
    print(f"task {args.task_id}: {kept} kept, {removed} {done}")
    return 0


def _state_migrate(args: argparse.Namespace) -> int:
    from reconciler.daemon import migrate_state_store

    if not is_postgres_url(args.target):
        raise UserError(f"--to must be a postgresql:// URL, got {describe_location(args.target)!r}")
    moved = _guarded(
        lambda: migrate_state_store(args.source, args.target, args.age_identity, datetime.now(UTC))
    )
    print(f"moved into {describe_location(args.target)}: {moved}")
    return 0


def _token_create(args: argparse.Namespace) -> int:
    abilities = tuple(args.abilities or ["*"])
    record, plaintext = _tokens(args.state).create_token(
        args.user_id, args.name, abilities, datetime.now(UTC), operator=args.operator
    )
    print(plaintext)
    role = "operator token" if record.operator else "token"
    print(
        f"{role} {record.id} for user {record.user_id} ({', '.join(abilities)}): "
        "shown once, store it now",
        file=sys.stderr,
    )
    return 0


def _token_list(args: argparse.Namespace) -> int:
    for record in _tokens(args.state).list(args.user_id):
        used = record.last_used_at.isoformat() if record.last_used_at else "never used"
        role = "operator" if record.operator else "user"
        print(
            f"{record.id}\tuser {record.user_id}\t{record.name}\t{','.join(record.abilities)}\t"
            f"{role}\tcreated {record.created_at.isoformat()}\t{used}"
        )
    return 0


def _token_revoke(args: argparse.Namespace) -> int:
    if not _tokens(args.state).revoke_token(args.token_id):
        raise UserError(f"no token with id {args.token_id}")
    print(f"revoked token {args.token_id}")
    return 0


def _secret_encrypt(args: argparse.Namespace) -> int:
    from reconciler.agecrypt import MAX_SECRET_BYTES, encrypt, reference_text

    if sys.stdin.isatty():
        import getpass

        secret = getpass.getpass("secret (not shown): ")
    else:
        raw = sys.stdin.buffer.read(MAX_SECRET_BYTES + 2)
        try:
            secret = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise UserError("the secret on stdin is not UTF-8 text") from None
    # `echo secret | reconciler secret encrypt`: the newline is echo's, not the secret's.
    secret = secret.removesuffix("\n").removesuffix("\r")
    armor = _guarded(lambda: encrypt(secret, args.recipients))
    print(reference_text(armor), end="")
    print(
        "paste it as the value of a secret field, indented under it (encryption_password:)",
        file=sys.stderr,
    )
    return 0


def _tokens(state: StateLocation) -> Tokens:
    from reconciler.state import open_state

    return _guarded(lambda: open_state(state)).tokens


def _guarded(action: Callable[[], _T]) -> _T:
    """Turns the errors a user can cause (paths, repositories, permissions) into UserError."""
    try:
        return action()
    except (ReconcilerError, OSError) as exc:
        raise UserError(str(exc)) from exc


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def _configure_logging(as_json: bool, verbose: bool) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(
        _JsonFormatter()
        if as_json
        else logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    # apprise logs whole notification URLs, tokens included, at debug level.
    logging.getLogger("apprise").setLevel(logging.WARNING)
