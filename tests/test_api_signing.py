"""A daemon that signs its API commits (`--signing-key`) and applies only signed heads
(`--allowed-signers`): what it commits, what `GET /api/sync` and `/metrics` say, what it refuses.

The daemon is started as `reconciler serve` starts it; keys are real ssh-keygen keys, a
person's commits are signed by git, and every check is git's own `verify-commit`.
"""

from __future__ import annotations

import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from reconciler.gitremote import UntrustedUpstreamError, push
from reconciler.gitstore import Author, Change, GitStore
from reconciler.headtrust import open_trust
from reconciler.signatures import SigningKey
from tests import configset
from tests.apirig import ApiRig, api_rig, config_files
from tests.daemonproc import create_token, serving
from tests.gitrepo import commit_files, git, head, init_repo
from tests.servers import wait_until
from tests.signers import Key, allowed_signers, make_key, signed_commit, verify_commit
from tests.test_api_tasks import NEW_TASK
from tests.test_cli import reconciler

pytestmark = pytest.mark.anyio


@dataclass
class Keys:
    alice: Key
    daemon: Key
    signers: Path


@pytest.fixture
def keys(tmp_path: Path) -> Keys:
    """alice (a person) and the daemon's own key, both allowed."""
    alice, own = make_key(tmp_path / "keys", "alice"), make_key(tmp_path / "keys", "daemon")
    return Keys(alice, own, allowed_signers(tmp_path / "allowed_signers", alice, own))


@pytest.fixture
async def rig(tmp_path: Path, keys: Keys) -> AsyncIterator[ApiRig]:
    """The config repository's head signed by alice; the daemon signs with its key."""
    init_repo(tmp_path / "config", config_files())
    signed_commit(tmp_path / "config", {}, "signed by alice", keys.alice)
    async with api_rig(
        tmp_path, clone=True, allowed_signers=keys.signers, signing_key=keys.daemon.private
    ) as made:
        yield made


async def test_an_api_commit_is_signed_by_the_daemon_and_git_verify_commit_accepts_it(
    rig: ApiRig, keys: Keys
) -> None:
    response = await rig.post("/api/backup-tasks", NEW_TASK)
    assert response.status_code == 201
    checked = verify_commit(rig.repo, "HEAD", keys.signers)
    assert checked.returncode == 0, checked.stderr
    assert 'Good "git" signature for daemon@example.com' in checked.stderr
    assert rig.engine.revision == head(rig.repo)
    assert 8 in rig.engine.desired.tasks


async def test_sync_shows_the_verified_revision_and_who_signed_it(rig: ApiRig) -> None:
    signature = (await rig.get("/api/sync")).json()["data"]["signature"]
    assert signature == {
        "required": True,
        "verified_revision": head(rig.repo),
        "signed_by": "alice@example.com",
        "refused_revision": None,
        "reason": None,
    }


async def test_sync_metrics_and_log_report_an_unsigned_head_and_why(
    rig: ApiRig, caplog: pytest.LogCaptureFixture
) -> None:
    verified = head(rig.repo)
    unsigned = commit_files(rig.repo, {"tasks/9.yaml": configset.task(9)}, "unsigned")
    await rig.engine.sync()
    data = (await rig.get("/api/sync")).json()["data"]
    assert data["revision"] == verified
    assert data["signature"] == {
        "required": True,
        "verified_revision": verified,
        "signed_by": "alice@example.com",
        "refused_revision": unsigned,
        "reason": "the commit is not signed",
    }
    metrics = (await rig.client.get("/metrics")).text
    assert "reconciler_signature_refusals_total 1.0" in metrics
    assert "reconciler_head_refused 1.0" in metrics
    assert (
        f"commit {unsigned[:12]} is not applied: the commit is not signed; the verified revision"
        f" {verified[:12]} keeps running" in caplog.text
    )


async def test_api_writes_are_refused_while_the_head_is_refused(rig: ApiRig) -> None:
    unsigned = commit_files(rig.repo, {"tasks/9.yaml": configset.task(9)}, "unsigned")
    response = await rig.post("/api/backup-tasks", NEW_TASK)
    assert response.status_code == 409
    assert (
        f"the branch head {unsigned[:12]} is not signed by an allowed key"
        in (response.json()["message"])
    )
    assert head(rig.repo) == unsigned


async def test_a_daemon_that_cannot_sign_refuses_api_writes(tmp_path: Path, keys: Keys) -> None:
    init_repo(tmp_path / "config", config_files())
    signed_commit(tmp_path / "config", {}, "signed by alice", keys.alice)
    before = head(tmp_path / "config")
    async with api_rig(tmp_path, clone=True, allowed_signers=keys.signers) as rig:
        response = await rig.post("/api/backup-tasks", NEW_TASK)
    assert response.status_code == 409
    assert "has no --signing-key to sign its own" in response.json()["message"]
    assert head(tmp_path / "config") == before


async def test_sync_says_signatures_are_not_required_without_allowed_signers(
    tmp_path: Path,
) -> None:
    async with api_rig(tmp_path) as rig:
        signature = (await rig.get("/api/sync")).json()["data"]["signature"]
    assert signature == {
        "required": False,
        "verified_revision": None,
        "signed_by": None,
        "refused_revision": None,
        "reason": None,
    }


def test_each_commit_of_a_chain_is_signed(tmp_path: Path, keys: Keys) -> None:
    repo = tmp_path / "config"
    base = init_repo(repo, {"tasks/a.yaml": "id: 1\n"})
    store = GitStore(repo, sign=SigningKey(keys.daemon.private).sign)
    ada, now = Author("Ada", "ada@example.com"), datetime(2026, 3, 10, tzinfo=UTC)
    shas = store.commit_chain(
        [
            Change({"tasks/a.yaml": b"id: 1\nlabel: a\n"}, ada, "edit a", now),
            Change({"tasks/b.yaml": b"id: 2\n"}, ada, "add b", now),
            Change({"tasks/c.yaml": b"id: 3\n"}, ada, "add c", now),
        ],
        parent=base,
    )
    assert git(repo, "rev-list", f"{base}..HEAD").split() == list(reversed(shas))
    for sha in shas:
        checked = verify_commit(repo, sha, keys.signers)
        assert checked.returncode == 0, checked.stderr


# Start-up: one sentence, no traceback


def _serve(tmp_path: Path, *options: str | Path) -> subprocess.CompletedProcess[str]:
    init_repo(tmp_path / "config", config_files())
    return reconciler("serve", "--repo", tmp_path / "config", "--state", tmp_path / "s/state.db",
                      "--port", "0", *options)  # fmt: skip


def test_an_allowed_signers_file_with_a_broken_line_stops_the_start(
    tmp_path: Path, keys: Keys
) -> None:
    broken = tmp_path / "broken_signers"
    broken.write_text(f"# team keys\n{keys.alice.principal} {keys.alice.public}\nbob ssh-ed25519\n")
    result = _serve(tmp_path, "--allowed-signers", broken)
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1] == (
        f"reconciler: {broken}:3: expected `PRINCIPALS [OPTIONS] KEYTYPE KEY`"
    )
    assert "Traceback" not in result.stderr


def test_a_missing_allowed_signers_file_stops_the_start(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    result = _serve(tmp_path, "--allowed-signers", missing)
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1].startswith(
        f"reconciler: {missing}: cannot read the allowed signers file:"
    )


def test_a_missing_signing_key_stops_the_start(tmp_path: Path) -> None:
    missing = tmp_path / "no-key"
    result = _serve(tmp_path, "--signing-key", missing)
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1] == f"reconciler: {missing}: the signing key is not a file"


def test_a_passphrase_protected_signing_key_stops_the_start(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "secret", "-f", str(locked)],
                   check=True, capture_output=True)  # fmt: skip
    result = _serve(tmp_path, "--signing-key", locked)
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1].startswith(
        f"reconciler: {locked}: cannot use it as an SSH signing key"
    )


def test_a_signing_key_the_allowed_signers_do_not_list_stops_the_start(
    tmp_path: Path, keys: Keys
) -> None:
    stranger = make_key(tmp_path / "keys", "stranger")
    result = _serve(tmp_path, "--allowed-signers", keys.signers, "--signing-key", stranger.private)
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1].startswith(
        f"reconciler: {keys.signers}: does not list the public key of --signing-key"
    )


def test_a_commit_rebased_before_its_push_is_signed_again(tmp_path: Path, keys: Keys) -> None:
    repo = tmp_path / "config"
    init_repo(repo, {"tasks/a.yaml": "id: 1\n"})
    bare = tmp_path / "upstream.git"
    git(tmp_path, "init", "-q", "--bare", "-b", "main", str(bare))
    git(repo, "remote", "add", "origin", str(bare))
    git(repo, "push", "-q", "origin", "main")
    git(tmp_path, "clone", "-q", str(bare), str(tmp_path / "laptop"))
    theirs = signed_commit(tmp_path / "laptop", {"tasks/b.yaml": "id: 2\n"}, "b", keys.alice)
    git(tmp_path / "laptop", "push", "-q", "origin", "main")
    store = GitStore(repo, sign=SigningKey(keys.daemon.private).sign)
    ada, now = Author("Ada", "ada@example.com"), datetime(2026, 3, 10, tzinfo=UTC)
    store.commit({"tasks/c.yaml": b"id: 3\n"}, ada, "add c", now, parent=store.head())

    push(repo, sign=store.signer)

    assert git(repo, "rev-parse", "HEAD^").strip() == theirs  # replayed onto the person's
    checked = verify_commit(repo, "HEAD", keys.signers)
    assert checked.returncode == 0, checked.stderr
    assert 'Good "git" signature for daemon@example.com' in checked.stderr


def test_a_commit_is_never_replayed_onto_an_unsigned_upstream_head(
    tmp_path: Path, keys: Keys
) -> None:
    repo = tmp_path / "config"
    init_repo(repo, {"tasks/a.yaml": "id: 1\n"})
    signed_commit(repo, {}, "signed by alice", keys.alice)
    bare = tmp_path / "upstream.git"
    git(tmp_path, "init", "-q", "--bare", "-b", "main", str(bare))
    git(repo, "remote", "add", "origin", str(bare))
    git(repo, "push", "-q", "origin", "main")
    git(tmp_path, "clone", "-q", str(bare), str(tmp_path / "laptop"))
    unsigned = commit_files(tmp_path / "laptop", {"tasks/b.yaml": "id: 2\n"}, "b, unsigned")
    git(tmp_path / "laptop", "push", "-q", "origin", "main")
    signing_key = SigningKey(keys.daemon.private)
    store = GitStore(repo, sign=signing_key.sign)
    trust = open_trust(repo, keys.signers, signing_key)
    ada, now = Author("Ada", "ada@example.com"), datetime(2026, 3, 10, tzinfo=UTC)
    ours = store.commit({"tasks/c.yaml": b"id: 3\n"}, ada, "add c", now, parent=store.head())

    with pytest.raises(UntrustedUpstreamError, match="not signed by an allowed key"):
        push(repo, sign=store.signer, distrust=trust.distrust)

    assert head(repo) == ours
    assert git(bare, "rev-parse", "main").strip() == unsigned


# As a user runs it: `reconciler serve` in its own process, the ref watch, a restart


def test_a_serving_daemon_follows_signed_heads_refuses_others_and_remembers_across_a_restart(
    tmp_path: Path, keys: Keys
) -> None:
    repo, state = tmp_path / "config", tmp_path / "state" / "state.db"
    init_repo(repo, config_files())
    first = signed_commit(repo, {}, "signed by alice", keys.alice)
    env = {
        "RECONCILER_ALLOWED_SIGNERS": str(keys.signers),
        "RECONCILER_SIGNING_KEY": str(keys.daemon.private),
    }
    token, log = create_token(state), tmp_path / "daemon.log"
    with serving(repo, state, token, log, env) as daemon:
        assert daemon.get("/api/sync")["data"]["revision"] == first
        unsigned = commit_files(repo, {"tasks/9.yaml": configset.task(9)}, "unsigned")
        wait_until(
            lambda: daemon.get("/api/sync")["data"]["signature"]["refused_revision"] == unsigned,
            "the unsigned head refused",
            log,
        )
        assert daemon.get("/api/sync")["data"]["revision"] == first
        fixed = signed_commit(repo, {"tasks/9.yaml": None}, "signed fix", keys.alice)
        daemon.wait_for_revision(fixed, within=30)
        status, _ = daemon.send("POST", "/api/backup-tasks", NEW_TASK)
        assert status == 201
        assert verify_commit(repo, "HEAD", keys.signers).returncode == 0
        verified = head(repo)
        daemon.wait_for_revision(verified, within=30)
    later = commit_files(repo, {"tasks/9.yaml": configset.task(9)}, "unsigned, while stopped")
    with serving(repo, state, token, log, env) as restarted:
        data = restarted.get("/api/sync")["data"]
    assert data["revision"] == verified
    assert data["signature"]["refused_revision"] == later
