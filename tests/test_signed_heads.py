"""Only heads signed by an allowed key reach the scheduler (`--allowed-signers`).

Real repositories, real ssh-keygen keys, commits signed by git itself, git's own verification;
the engine, GitStore, Scheduler and state store are the daemon's. Only the clock is fake.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import anyio
import pytest

from reconciler.headtrust import HeadTrust
from reconciler.signatures import CommitVerifier
from tests import configset
from tests.gitrepo import commit_files, init_repo
from tests.signers import Key, allowed_signers, make_key, signed_commit
from tests.test_engine import Rig, make_rig

pytestmark = pytest.mark.anyio


@dataclass
class Signed:
    rig: Rig
    trust: HeadTrust
    alice: Key
    mallory: Key


def _trusting_rig(tmp_path: Path, alice: Key) -> tuple[Rig, HeadTrust]:
    rig = make_rig(tmp_path / "config", tmp_path / "state.db")
    signers = allowed_signers(tmp_path / "allowed_signers", alice)
    trust = HeadTrust(CommitVerifier(rig.repo, signers), signs_own_commits=True)
    rig.engine.trust = trust
    return rig, trust


@pytest.fixture
def signed(tmp_path: Path) -> Iterator[Signed]:
    """A config repository whose only commit (task 1) alice signed; alice is allowed, mallory
    is not."""
    keys = tmp_path / "keys"
    alice, mallory = make_key(keys, "alice"), make_key(keys, "mallory")
    repo = tmp_path / "config"
    init_repo(repo, configset.base_files())
    signed_commit(repo, {"tasks/1.yaml": configset.task(1)}, "task 1", alice)
    rig, trust = _trusting_rig(tmp_path, alice)
    yield Signed(rig, trust, alice, mallory)
    rig.engine.close()
    rig.state.close()


async def test_a_head_signed_by_an_allowed_key_is_applied(signed: Signed) -> None:
    await signed.rig.engine.sync()
    assert sorted(signed.rig.running) == [1]
    assert signed.rig.engine.revision == signed.rig.engine.store.head()
    assert signed.trust.state.verified_revision == signed.rig.engine.revision
    assert signed.trust.state.signed_by == "alice@example.com"
    assert signed.trust.state.refused_revision is None


async def test_an_unsigned_head_is_refused_and_the_verified_revision_keeps_running(
    signed: Signed,
) -> None:
    await signed.rig.engine.sync()
    verified = signed.rig.engine.revision
    unsigned = commit_files(signed.rig.repo, {"tasks/2.yaml": configset.task(2)}, "unsigned")
    await signed.rig.engine.sync()
    assert sorted(signed.rig.running) == [1]
    assert signed.rig.engine.revision == verified
    state = signed.trust.state
    assert (state.verified_revision, state.refused_revision) == (verified, unsigned)
    assert state.reason == "the commit is not signed"


async def test_a_head_signed_by_a_key_the_file_does_not_list_is_refused(signed: Signed) -> None:
    await signed.rig.engine.sync()
    verified = signed.rig.engine.revision
    forged = signed_commit(
        signed.rig.repo, {"tasks/2.yaml": configset.task(2)}, "mallory's", signed.mallory
    )
    await signed.rig.engine.sync()
    assert sorted(signed.rig.running) == [1]
    assert signed.rig.engine.revision == verified
    assert signed.trust.state.refused_revision == forged
    reason = signed.trust.state.reason
    assert reason is not None
    assert reason.startswith("it is signed by a key the allowed signers file does not list")
    assert "SHA256:" in reason


async def test_a_signed_head_after_a_refused_one_is_applied(signed: Signed) -> None:
    await signed.rig.engine.sync()
    commit_files(signed.rig.repo, {"tasks/2.yaml": configset.task(2)}, "unsigned")
    await signed.rig.engine.sync()
    fixed = signed_commit(signed.rig.repo, {"tasks/3.yaml": configset.task(3)}, "ok", signed.alice)
    await signed.rig.engine.sync()
    # The signed head vouches for its whole tree, the unsigned commit's task 2 included.
    assert sorted(signed.rig.running) == [1, 2, 3]
    assert signed.rig.engine.revision == fixed
    assert signed.trust.state.refused_revision is None
    assert signed.trust.state.reason is None


async def test_a_refused_head_is_counted_once_however_often_it_is_seen(signed: Signed) -> None:
    await signed.rig.engine.sync()
    commit_files(signed.rig.repo, {"tasks/2.yaml": configset.task(2)}, "unsigned")
    await signed.rig.engine.sync()
    await signed.rig.engine.sync()
    await signed.rig.engine.sync(full=True)  # the periodic resync checks it again
    assert signed.trust.state.refusals == 1
    commit_files(signed.rig.repo, {"tasks/3.yaml": configset.task(3)}, "unsigned too")
    await signed.rig.engine.sync()
    assert signed.trust.state.refusals == 2
    assert sorted(signed.rig.running) == [1]


async def test_a_refused_head_is_logged_once_not_at_every_resync(
    signed: Signed, caplog: pytest.LogCaptureFixture
) -> None:
    await signed.rig.engine.sync()
    unsigned = commit_files(signed.rig.repo, {"tasks/2.yaml": configset.task(2)}, "unsigned")
    await signed.rig.engine.sync()
    await signed.rig.engine.sync(full=True)
    await signed.rig.engine.sync(full=True)
    assert caplog.text.count(f"commit {unsigned[:12]} is not applied") == 1


async def test_the_resync_applies_a_refused_head_once_its_key_is_allowed(
    signed: Signed, tmp_path: Path
) -> None:
    await signed.rig.engine.sync()
    by_mallory = signed_commit(
        signed.rig.repo, {"tasks/2.yaml": configset.task(2)}, "mallory's", signed.mallory
    )
    await signed.rig.engine.sync()
    allowed_signers(tmp_path / "allowed_signers", signed.alice, signed.mallory)
    await signed.rig.engine.sync(full=True)
    assert signed.rig.engine.revision == by_mallory
    assert sorted(signed.rig.running) == [1, 2]


async def test_at_first_start_an_unsigned_head_runs_the_newest_verified_commit_below_it(
    tmp_path: Path,
) -> None:
    alice = make_key(tmp_path / "keys", "alice")
    repo = tmp_path / "config"
    init_repo(repo, configset.base_files())
    verified = signed_commit(repo, {"tasks/1.yaml": configset.task(1)}, "task 1", alice)
    commit_files(repo, {"tasks/2.yaml": configset.task(2)}, "unsigned")
    unsigned = commit_files(repo, {"tasks/3.yaml": configset.task(3)}, "unsigned too")
    rig, trust = _trusting_rig(tmp_path, alice)
    try:
        await rig.engine.sync()
        assert sorted(rig.running) == [1]
        assert rig.engine.revision == verified
        assert (trust.state.verified_revision, trust.state.refused_revision) == (verified, unsigned)
    finally:
        rig.engine.close()
        rig.state.close()


async def test_the_file_time_index_follows_the_verified_revision_not_the_refused_head(
    tmp_path: Path,
) -> None:
    alice = make_key(tmp_path / "keys", "alice")
    repo = tmp_path / "config"
    init_repo(repo, configset.base_files())
    verified = signed_commit(repo, {"tasks/1.yaml": configset.task(1)}, "task 1", alice)
    commit_files(repo, {"tasks/2.yaml": configset.task(2)}, "unsigned")
    rig, _ = _trusting_rig(tmp_path, alice)
    try:
        await rig.engine.sync()  # a first start: the index is rebuilt in the background
        deadline = time.monotonic() + 30
        while rig.state.file_times.file_times_revision() != verified:
            assert time.monotonic() < deadline, "the index never reached the applied revision"
            await anyio.sleep(0.05)
    finally:
        rig.engine.close()
        rig.state.close()


async def test_at_first_start_with_no_verified_commit_nothing_runs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    alice = make_key(tmp_path / "keys", "alice")
    repo = tmp_path / "config"
    unsigned = init_repo(repo, {**configset.base_files(), "tasks/1.yaml": configset.task(1)})
    rig, trust = _trusting_rig(tmp_path, alice)
    try:
        await rig.engine.sync()
        assert rig.running == {}
        assert rig.engine.revision is None
        assert rig.engine.desired.tasks == {}
        assert trust.state.verified_revision is None
        assert trust.state.refused_revision == unsigned
        assert "nothing runs: no task is scheduled until a commit signed by an allowed key" in (
            caplog.text
        )
    finally:
        rig.engine.close()
        rig.state.close()
