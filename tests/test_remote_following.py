"""`serve --remote`: the daemon follows the team's git server, pushes its API commits there,
and fetches at once on `POST /api/sync` or a signed webhook.

The daemon's own wiring and start-up (`daemon.running`) over a real bare repository reached
over file://, with a person's clone pushing to it; only the clock is fake.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from reconciler import daemon
from reconciler.api.hooks import signature
from reconciler.gitremote import SET_ASIDE_PREFIX
from reconciler.gitstore import GitError
from tests import configset
from tests.apirig import ApiRig, api_rig, config_files, settings
from tests.gitrepo import commit_files, git, head, init_repo, person_pushes, shared_with_a_remote
from tests.signers import Key, allowed_signers, make_key, signed_commit

pytestmark = pytest.mark.anyio

SECRET = "It's a Secret to Everybody"
PUSH_EVENT = b'{"ref": "refs/heads/main", "after": "0123abcd"}'
# Far beyond any test: only POST /api/sync and the webhook fetch (besides the one at start).
NEVER = 3600.0
GENEROUS = 10.0


@pytest.fixture
def person(tmp_path: Path) -> Path:
    """A person's clone of the team's repository, `tmp_path/upstream.git`."""
    repo = tmp_path / "person"
    shared_with_a_remote(repo, config_files(), tmp_path / "upstream.git")
    return repo


@pytest.fixture
def url(tmp_path: Path, person: Path) -> str:
    return f"file://{tmp_path / 'upstream.git'}"


@asynccontextmanager
async def following(tmp_path: Path, url: str, **overrides: Any) -> AsyncIterator[ApiRig]:
    """The daemon following `url`, once its first fetch (started with it) is done."""
    options: dict[str, Any] = {"remote": url, "fetch_interval": NEVER, **overrides}
    async with api_rig(tmp_path, clone=True, **options) as rig:
        upstream = rig.daemon.upstream
        assert upstream is not None
        await until(lambda: upstream.status.fetches > 0)
        yield rig


@pytest.fixture
async def rig(tmp_path: Path, url: str) -> AsyncIterator[ApiRig]:
    async with following(tmp_path, url, webhook_secret=SECRET) as made:
        yield made


def upstream_head(tmp_path: Path) -> str:
    return git(tmp_path / "upstream.git", "rev-parse", "main").strip()


def upstream_subjects(tmp_path: Path) -> list[str]:
    return git(tmp_path / "upstream.git", "log", "--format=%s", "main").splitlines()


async def webhook(rig: ApiRig, body: bytes, headers: dict[str, str]) -> Any:
    return await rig.client.post("/api/hooks/git", content=body, headers=headers)


async def until(condition: Any, within: float = GENEROUS) -> float:
    """Seconds until `condition()` held; fails after `within`."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > within:
            raise AssertionError(f"not within {within} s")
        await asyncio.sleep(0.01)
    return time.monotonic() - started


async def test_the_first_start_clones_the_remote_into_the_repo_directory(
    tmp_path: Path, person: Path, url: str, rig: ApiRig
) -> None:
    assert head(rig.repo) == head(person)
    assert rig.engine.revision == head(person)
    remote = (await rig.get("/api/sync")).json()["data"]["remote"]
    assert remote["url"] == url
    assert remote["branch"] == "main"
    assert remote["last_error"] is None
    assert remote["last_fetch_at"] == remote["last_success_at"] == "2026-03-10T12:00:00Z"
    assert remote["set_aside"] == []


async def test_a_repo_directory_cloned_from_elsewhere_is_refused_in_one_sentence(
    tmp_path: Path, url: str
) -> None:
    elsewhere = tmp_path / "elsewhere"
    init_repo(elsewhere, config_files())
    git(tmp_path, "clone", "-q", str(elsewhere), str(tmp_path / "config"))

    with pytest.raises(GitError) as refused:
        async with daemon.running(settings(tmp_path, remote=url), environ={}):
            pass

    message = str(refused.value)
    assert message.startswith(f"{tmp_path / 'config'} is a clone with origin {elsewhere}")
    assert f"not of {url}" in message
    assert "\n" not in message
    assert not (tmp_path / "state.db").exists()


async def test_a_persons_push_reaches_the_scheduler_after_a_fetch(
    person: Path, rig: ApiRig
) -> None:
    pushed = person_pushes(person, {"tasks/9-new.yaml": configset.task(9, 1)})
    assert rig.engine.next_fire(9) is None

    response = await rig.post("/api/sync")

    assert response.status_code == 200
    assert response.json()["data"]["revision"] == pushed
    assert rig.engine.next_fire(9) is not None
    assert head(rig.repo) == pushed
    assert rig.work_tree_status() == ""


async def test_post_sync_answers_with_the_body_of_get_sync(person: Path, rig: ApiRig) -> None:
    person_pushes(person, {"tasks/9-new.yaml": configset.task(9, 1)})
    posted = (await rig.post("/api/sync")).json()
    assert posted == (await rig.get("/api/sync")).json()
    assert posted["data"]["tasks"] == 3


async def test_the_fetch_loop_brings_a_push_without_being_asked(
    tmp_path: Path, person: Path, url: str
) -> None:
    async with following(tmp_path, url, fetch_interval=0.2) as rig:
        pushed = person_pushes(person, {"tasks/9-new.yaml": configset.task(9, 1)})
        await until(lambda: rig.engine.revision == pushed)
        assert rig.engine.next_fire(9) is not None


async def test_an_api_write_is_pushed_to_the_remote(tmp_path: Path, rig: ApiRig) -> None:
    response = await rig.put("/api/backup-tasks/1", {"label": "From the API"})

    assert response.status_code == 200
    assert upstream_head(tmp_path) == head(rig.repo)
    assert upstream_subjects(tmp_path)[0] == "api: update backup task 1 (label)"


async def test_a_person_and_the_api_at_once_the_persons_commit_stays_and_the_api_is_rebased(
    tmp_path: Path, person: Path, rig: ApiRig
) -> None:
    theirs = person_pushes(person, {"tasks/2-grace.yaml": configset.task(2, 2, label="Grace's")})

    response = await rig.put("/api/backup-tasks/1", {"label": "From the API"})

    assert response.status_code == 200
    assert response.json()["data"]["label"] == "From the API"
    assert upstream_subjects(tmp_path)[:2] == ["api: update backup task 1 (label)", "person"]
    assert git(rig.repo, "rev-parse", "HEAD^").strip() == theirs
    assert upstream_head(tmp_path) == head(rig.repo) == rig.engine.revision
    assert "label: Grace's" in rig.file("tasks/2-grace.yaml")
    assert (await rig.get("/api/backup-tasks/2", user_id=2)).json()["data"]["label"] == "Grace's"


def person_keeps_pushing(person: Path, task_ids: range) -> None:
    """A person adding one task file per commit, each pushed as a person pushes: rejected
    because the daemon pushed meanwhile, they pull --rebase and push again."""
    for task_id in task_ids:
        commit_files(person, {f"tasks/{task_id}-p.yaml": configset.task(task_id)}, f"p{task_id}")
        for _ in range(50):
            try:
                git(person, "push", "-q", "origin", "main")
                break
            except RuntimeError:
                git(person, "pull", "-q", "--rebase", "origin", "main")
        else:
            raise AssertionError("the person's push was never accepted")


async def test_a_person_pushing_while_the_api_writes_loses_nothing_on_either_side(
    tmp_path: Path, person: Path, rig: ApiRig
) -> None:
    pushing = asyncio.create_task(asyncio.to_thread(person_keeps_pushing, person, range(20, 24)))
    answers = await asyncio.gather(
        *(rig.put(f"/api/backup-tasks/{task_id}", {"label": f"API {n}"}) for n, task_id in
          enumerate((1, 7, 1, 7)))
    )  # fmt: skip
    await pushing
    await rig.post("/api/sync")  # pushes what a push rejected too often left behind

    for answer in answers:
        # A remote that moved at every one of the push's attempts is a 409 saying so.
        assert answer.status_code == 200 or "not pushed" in answer.json()["message"]
    subjects = upstream_subjects(tmp_path)
    assert sum(subject.startswith("api: update backup task") for subject in subjects) == 4
    assert {f"p{task_id}" for task_id in range(20, 24)} <= set(subjects)
    assert upstream_head(tmp_path) == head(rig.repo) == rig.engine.revision
    assert git(rig.repo, "rev-list", "--merges", "HEAD") == ""
    assert all(rig.engine.next_fire(task_id) is not None for task_id in range(20, 24))
    assert (await rig.get("/api/backup-tasks/1")).json()["data"]["label"] == "API 2"
    assert rig.work_tree_status() == ""


async def test_a_real_conflict_is_a_409_the_person_wins_and_nothing_is_lost(
    tmp_path: Path, person: Path, rig: ApiRig
) -> None:
    theirs = person_pushes(person, {"tasks/1-first.yaml": configset.task(1, label="Person's")})

    response = await rig.put("/api/backup-tasks/1", {"label": "API's"})

    assert response.status_code == 409
    message = response.json()["message"]
    assert "Nothing was lost" in message
    ref = message.split(" kept on ")[1].split(" ")[0]
    assert ref.startswith(SET_ASIDE_PREFIX)
    assert "label: API's" in git(rig.repo, "show", f"{ref}:tasks/1-first.yaml")
    assert upstream_head(tmp_path) == theirs == head(rig.repo) == rig.engine.revision
    assert (await rig.get("/api/backup-tasks/1")).json()["data"]["label"] == "Person's"
    sync = (await rig.get("/api/sync")).json()["data"]["remote"]
    assert [kept["ref"] for kept in sync["set_aside"]] == [ref]
    assert rig.work_tree_status() == ""


async def test_a_force_push_is_followed_and_an_unpushed_api_commit_is_kept_under_refs_reconciler(
    tmp_path: Path, person: Path, rig: ApiRig, caplog: pytest.LogCaptureFixture
) -> None:
    upstream = tmp_path / "upstream.git"
    upstream.rename(tmp_path / "away.git")
    unpushed = await rig.put("/api/backup-tasks/1", {"label": "API's"})
    assert unpushed.status_code == 409
    assert "not pushed" in unpushed.json()["message"]
    ours = head(rig.repo)
    (tmp_path / "away.git").rename(upstream)
    (person / "tasks" / "1-first.yaml").write_text(configset.task(1, label="Rewritten"))
    git(person, "commit", "-qa", "--amend", "-m", "initial, rewritten")
    git(person, "push", "-q", "--force", "origin", "main")
    caplog.set_level(logging.INFO, logger="reconciler.upstream")

    synced = (await rig.post("/api/sync")).json()["data"]

    assert synced["revision"] == head(person) == head(rig.repo)
    assert (await rig.get("/api/backup-tasks/1")).json()["data"]["label"] == "Rewritten"
    [kept] = synced["remote"]["set_aside"]
    assert kept["ref"].startswith(SET_ASIDE_PREFIX)
    assert kept["commits"] == [ours]
    assert git(rig.repo, "rev-parse", kept["ref"]).strip() == ours
    assert upstream_head(tmp_path) == head(person)  # nothing forced back
    assert "was rewritten (force-pushed)" in caplog.text
    assert kept["ref"] in caplog.text


async def test_a_force_push_back_to_an_older_commit_takes_its_commits_out_of_the_history(
    person: Path, rig: ApiRig
) -> None:
    person_pushes(person, {"tasks/1-first.yaml": configset.task(1, label="Oops")}, "oops")
    await rig.post("/api/sync")
    history = (await rig.get("/api/backup-tasks/1/history")).json()["data"]
    assert [entry["message"] for entry in history] == ["oops\n", "initial\n"]
    git(person, "push", "-q", "--force", "origin", "HEAD~1:main")

    synced = (await rig.post("/api/sync")).json()["data"]

    assert synced["revision"] == git(person, "rev-parse", "HEAD~1").strip()
    history = (await rig.get("/api/backup-tasks/1/history")).json()["data"]
    assert [entry["message"] for entry in history] == ["initial\n"]


async def test_a_failing_fetch_keeps_the_last_revision_and_shows_in_sync_and_metrics(
    tmp_path: Path, person: Path, rig: ApiRig
) -> None:
    before = rig.engine.revision
    (tmp_path / "upstream.git").rename(tmp_path / "away.git")
    rig.clock.advance(timedelta(minutes=5))

    synced = (await rig.post("/api/sync")).json()["data"]

    assert synced["revision"] == before
    assert synced["remote"]["last_error"].startswith("git fetch exited with 128")
    assert synced["remote"]["last_fetch_at"] == "2026-03-10T12:05:00Z"
    assert synced["remote"]["last_success_at"] == "2026-03-10T12:00:00Z"
    metrics = (await rig.client.get("/metrics")).text
    assert "reconciler_remote_up 0.0" in metrics
    assert "reconciler_remote_fetch_failures_total 1.0" in metrics

    (tmp_path / "away.git").rename(tmp_path / "upstream.git")
    healed = (await rig.post("/api/sync")).json()["data"]["remote"]
    assert healed["last_error"] is None
    assert "reconciler_remote_up 1.0" in (await rig.client.get("/metrics")).text


async def test_without_a_remote_post_sync_reconciles_and_remote_is_null(tmp_path: Path) -> None:
    async with api_rig(tmp_path) as rig:
        revision = commit_files(rig.repo, {"tasks/9-new.yaml": configset.task(9, 1)}, "local")
        synced = (await rig.post("/api/sync")).json()["data"]
        assert synced["revision"] == revision
        assert synced["remote"] is None


async def test_post_sync_is_limited_per_user(tmp_path: Path) -> None:
    async with api_rig(tmp_path) as rig:
        for _ in range(10):
            assert (await rig.post("/api/sync")).status_code == 200
        refused = await rig.post("/api/sync")
        assert refused.status_code == 429
        assert refused.headers["Retry-After"] == "60"
        assert (await rig.post("/api/sync", user_id=2)).status_code == 200


async def test_post_sync_needs_a_token(rig: ApiRig) -> None:
    assert (await rig.client.post("/api/sync")).status_code == 401


async def test_a_signed_webhook_is_accepted_and_the_push_reaches_the_scheduler(
    person: Path, rig: ApiRig
) -> None:
    person_pushes(person, {"tasks/9-new.yaml": configset.task(9, 1)})
    headers = {"X-Hub-Signature-256": signature(PUSH_EVENT, SECRET), "X-GitHub-Event": "push"}

    response = await webhook(rig, PUSH_EVENT, headers)

    assert response.status_code == 202
    assert response.json() == {"message": "Fetching now."}
    # Well within a second on an idle machine; the bound only allows for a loaded one.
    assert await until(lambda: rig.engine.next_fire(9) is not None) < GENEROUS


async def test_a_webhook_with_a_wrong_signature_is_a_401_and_fetches_nothing(
    person: Path, rig: ApiRig
) -> None:
    before = rig.engine.revision
    person_pushes(person, {"tasks/9-new.yaml": configset.task(9, 1)})
    forged = {"X-Hub-Signature-256": signature(PUSH_EVENT + b" ", SECRET)}

    response = await webhook(rig, PUSH_EVENT, forged)

    assert response.status_code == 401
    assert "X-Hub-Signature-256" in response.json()["message"]
    await asyncio.sleep(0.3)
    assert rig.engine.revision == before


async def test_a_webhook_signed_with_another_secret_is_a_401(rig: ApiRig) -> None:
    headers = {"X-Hub-Signature-256": signature(PUSH_EVENT, "another secret")}
    assert (await webhook(rig, PUSH_EVENT, headers)).status_code == 401


async def test_a_webhook_without_a_signature_is_a_401(rig: ApiRig) -> None:
    assert (await webhook(rig, PUSH_EVENT, {})).status_code == 401


async def test_a_gitlab_webhook_with_the_token_is_accepted(person: Path, rig: ApiRig) -> None:
    pushed = person_pushes(person, {"tasks/9-new.yaml": configset.task(9, 1)})
    response = await webhook(rig, PUSH_EVENT, {"X-Gitlab-Token": SECRET})
    assert response.status_code == 202
    await until(lambda: rig.engine.revision == pushed)


async def test_a_gitlab_webhook_with_a_wrong_token_is_a_401(rig: ApiRig) -> None:
    response = await webhook(rig, PUSH_EVENT, {"X-Gitlab-Token": SECRET + "!"})
    assert response.status_code == 401


async def test_the_webhook_is_a_404_when_no_secret_is_configured(tmp_path: Path, url: str) -> None:
    async with following(tmp_path, url) as rig:
        headers = {"X-Hub-Signature-256": signature(PUSH_EVENT, SECRET)}
        response = await webhook(rig, PUSH_EVENT, headers)
        assert response.status_code == 404


async def test_the_webhooks_body_is_still_bounded(rig: ApiRig) -> None:
    body = b"x" * (rig.daemon.settings.max_body_bytes + 1)
    headers = {"X-Hub-Signature-256": signature(body, SECRET)}
    assert (await webhook(rig, body, headers)).status_code == 413


async def test_an_api_commit_replayed_onto_a_persons_signed_push_is_pushed_signed(
    tmp_path: Path, person: Path, url: str
) -> None:
    alice, own = make_key(tmp_path / "keys", "alice"), make_key(tmp_path / "keys", "daemon")
    signers = allowed_signers(tmp_path / "allowed_signers", alice, own)
    signed_commit(person, {}, "signed by alice", alice)
    git(person, "push", "-q", "origin", "main")
    async with following(tmp_path, url, allowed_signers=signers, signing_key=own.private) as rig:
        theirs = signed_commit(
            person, {"tasks/2-grace.yaml": configset.task(2, 2, label="Grace's")}, "person", alice
        )
        git(person, "push", "-q", "origin", "main")

        response = await rig.put("/api/backup-tasks/1", {"label": "From the API"})

        assert response.status_code == 200
        pushed = upstream_head(tmp_path)
        assert git(rig.repo, "rev-parse", f"{pushed}^").strip() == theirs
        verdict = git(
            rig.repo, "-c", f"gpg.ssh.allowedSignersFile={signers}",
            "log", "-1", "--format=%G? %GS", pushed,
        )  # fmt: skip
        assert verdict.split() == ["G", own.principal]
        assert rig.engine.revision == pushed


# With --allowed-signers: what is fetched runs only if its head is signed by an allowed key,
# however it arrives (POST /api/sync, the webhook, the fetch an API write makes before pushing).


@dataclass
class Trusted:
    rig: ApiRig
    person: Path
    signed: str  # the verified revision the daemon started on
    alice: Key


@pytest.fixture
async def trusted(tmp_path: Path, person: Path, url: str) -> AsyncIterator[Trusted]:
    """The remote's head signed by alice; the daemon verifies heads and signs its own commits."""
    alice, own = make_key(tmp_path / "keys", "alice"), make_key(tmp_path / "keys", "daemon")
    signers = allowed_signers(tmp_path / "allowed_signers", alice, own)
    signed = signed_commit(person, {}, "signed by alice", alice)
    git(person, "push", "-q", "origin", "main")
    async with following(
        tmp_path, url, allowed_signers=signers, signing_key=own.private, webhook_secret=SECRET
    ) as rig:
        assert rig.engine.revision == signed
        yield Trusted(rig, person, signed, alice)


async def test_a_persons_unsigned_push_is_refused_and_the_verified_revision_keeps_running(
    trusted: Trusted,
) -> None:
    rig = trusted.rig
    unsigned = person_pushes(trusted.person, {"tasks/9-new.yaml": configset.task(9, 1)})

    synced = (await rig.post("/api/sync")).json()["data"]

    assert synced["revision"] == trusted.signed
    assert synced["signature"]["refused_revision"] == unsigned
    assert synced["signature"]["reason"] == "the commit is not signed"
    assert synced["remote"]["last_error"] is None
    assert rig.engine.next_fire(9) is None


async def test_an_unsigned_push_announced_by_the_webhook_is_refused(trusted: Trusted) -> None:
    rig = trusted.rig
    unsigned = person_pushes(trusted.person, {"tasks/9-new.yaml": configset.task(9, 1)})
    headers = {"X-Hub-Signature-256": signature(PUSH_EVENT, SECRET)}

    response = await rig.client.post("/api/hooks/git", content=PUSH_EVENT, headers=headers)

    assert response.status_code == 202
    trust = rig.engine.trust
    assert trust is not None
    await until(lambda: trust.state.refused_revision == unsigned)
    assert rig.engine.revision == trusted.signed
    assert rig.engine.next_fire(9) is None


async def test_a_signed_push_announced_by_the_webhook_is_applied(trusted: Trusted) -> None:
    rig = trusted.rig
    pushed = signed_commit(
        trusted.person, {"tasks/9-new.yaml": configset.task(9, 1)}, "signed", trusted.alice
    )
    git(trusted.person, "push", "-q", "origin", "main")
    headers = {"X-Gitlab-Token": SECRET}

    assert (await rig.client.post("/api/hooks/git", headers=headers)).status_code == 202

    await until(lambda: rig.engine.revision == pushed)
    assert rig.engine.next_fire(9) is not None


async def test_an_api_write_never_signs_a_persons_unsigned_push_into_a_verified_head(
    tmp_path: Path, trusted: Trusted
) -> None:
    rig = trusted.rig
    unsigned = person_pushes(trusted.person, {"tasks/9-new.yaml": configset.task(9, 1)})

    response = await rig.put("/api/backup-tasks/1", {"label": "From the API"})

    assert response.status_code == 409
    message = response.json()["message"]
    assert f"the remote's head {unsigned[:12]} is not signed by an allowed key" in message
    assert upstream_head(tmp_path) == unsigned  # nothing of ours pushed on top of it
    assert git(rig.repo, "rev-parse", "HEAD^").strip() == trusted.signed
    assert rig.engine.revision == head(rig.repo)  # ours, signed by the daemon
    assert rig.engine.next_fire(9) is None
    remote = (await rig.get("/api/sync")).json()["data"]["remote"]
    assert "is not signed by an allowed key" in remote["last_error"]


async def test_an_unpushed_api_commit_is_pushed_once_a_signed_commit_is_the_remotes_head(
    tmp_path: Path, trusted: Trusted
) -> None:
    rig = trusted.rig
    person_pushes(trusted.person, {"tasks/9-new.yaml": configset.task(9, 1)})
    assert (await rig.put("/api/backup-tasks/1", {"label": "From the API"})).status_code == 409
    fixed = signed_commit(trusted.person, {}, "reviewed, signed", trusted.alice)
    git(trusted.person, "push", "-q", "origin", "main")

    synced = (await rig.post("/api/sync")).json()["data"]

    assert synced["remote"]["last_error"] is None
    assert git(rig.repo, "rev-parse", "HEAD^").strip() == fixed
    assert upstream_head(tmp_path) == head(rig.repo) == synced["revision"]
    assert rig.engine.next_fire(9) is not None
    assert (await rig.get("/api/backup-tasks/1")).json()["data"]["label"] == "From the API"
