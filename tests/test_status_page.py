"""`GET /`, the status page, over HTTP against the daemon's own app: a login form without a
token, a cookie that scripts and other sites cannot use, the caller's tasks only, escaped."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import timedelta
from html import unescape
from pathlib import Path

import httpx
import pytest

from reconciler.api.statuspage import COOKIE
from reconciler.types import RunStatus
from tests import configset
from tests.apirig import ApiRig, api_rig, config_files
from tests.gitrepo import commit_files, shared_with_a_remote

pytestmark = pytest.mark.anyio

HOSTILE = "<script>alert('x')</script> & \"quoted\""


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[ApiRig]:
    files = {**config_files(), "tasks/3-hostile.yaml": configset.task(3, 1, label=HOSTILE)}
    async with api_rig(tmp_path, files) as made:
        yield made


def token(rig: ApiRig, user_id: int = 1, abilities: tuple[str, ...] = ("*",)) -> str:
    return rig.auth(user_id, abilities)["Authorization"].removeprefix("Bearer ")


async def login(rig: ApiRig, user_id: int = 1) -> httpx.Response:
    return await rig.client.post(
        "/login", data={"token": token(rig, user_id)}, headers={"Origin": "http://testserver"}
    )


def task_ids(page: str) -> list[int]:
    return [int(found) for found in re.findall(r'data-task-id="(\d+)"', page)]


async def test_the_page_without_a_token_is_a_login_form_answered_401(rig: ApiRig) -> None:
    response = await rig.client.get("/")

    assert response.status_code == 401
    assert 'action="/login"' in response.text
    assert 'name="token"' in response.text
    assert task_ids(response.text) == []


async def test_a_wrong_token_is_refused_at_login_and_sets_no_cookie(rig: ApiRig) -> None:
    response = await rig.client.post("/login", data={"token": "rk_not-a-token"})

    assert response.status_code == 401
    assert "not accepted" in response.text
    assert "set-cookie" not in response.headers


async def test_logging_in_redirects_with_an_http_only_same_site_strict_cookie(
    rig: ApiRig,
) -> None:
    response = await login(rig)

    assert response.status_code == 303
    assert response.headers["location"] == "/"
    cookie = response.headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE}={token(rig)};")
    attributes = {part.strip().lower() for part in cookie.split(";")[1:]}
    assert {"httponly", "samesite=strict", "path=/"} <= attributes
    assert "secure" not in attributes  # served over plain http here


async def test_over_https_the_cookie_is_also_secure(rig: ApiRig) -> None:
    response = await rig.client.post(
        "https://testserver/login",
        data={"token": token(rig)},
        headers={"Origin": "https://testserver"},
    )

    assert "secure" in response.headers["set-cookie"].lower()


async def test_the_cookie_shows_the_callers_tasks_and_no_other_users(rig: ApiRig) -> None:
    await login(rig)  # the client keeps the cookie

    page = await rig.client.get("/")

    assert page.status_code == 200
    assert task_ids(page.text) == [1, 3, 7]  # task 2 is Grace's


async def test_another_users_page_shows_only_their_task(rig: ApiRig) -> None:
    page = await rig.client.get("/", headers=rig.auth(2))

    assert task_ids(page.text) == [2]


async def test_a_bearer_header_shows_the_page_too(rig: ApiRig) -> None:
    page = await rig.client.get("/", headers=rig.auth(1))

    assert page.status_code == 200
    assert "All 3 tasks are healthy." in page.text


async def test_a_token_in_the_query_string_is_not_accepted(rig: ApiRig) -> None:
    for name in ("token", COOKIE, "access_token"):
        response = await rig.client.get("/", params={name: token(rig)})

        assert response.status_code == 401


async def test_a_revoked_tokens_cookie_is_refused_and_cleared(rig: ApiRig) -> None:
    await login(rig)
    (record,) = rig.state.tokens.list(1)
    rig.state.tokens.revoke_token(record.id)

    response = await rig.client.get("/")

    assert response.status_code == 401
    assert f'{COOKIE}=""' in response.headers["set-cookie"]


async def test_a_token_without_the_view_ability_cannot_log_in(rig: ApiRig) -> None:
    response = await rig.client.post("/login", data={"token": token(rig, 1, ("run-backup-tasks",))})

    assert response.status_code == 401
    assert "set-cookie" not in response.headers


async def test_a_login_posted_from_another_site_is_refused(rig: ApiRig) -> None:
    for headers in ({"Origin": "https://evil.example.com"}, {"Sec-Fetch-Site": "cross-site"}):
        response = await rig.client.post("/login", data={"token": token(rig)}, headers=headers)

        assert response.status_code == 403
        assert "set-cookie" not in response.headers


async def test_a_hostile_label_is_escaped(rig: ApiRig) -> None:
    page = (await rig.client.get("/", headers=rig.auth(1))).text

    assert "<script>" not in page
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &#34;quoted&#34;" in page


async def test_the_page_allows_no_script_and_is_not_cached(rig: ApiRig) -> None:
    response = await rig.client.get("/", headers=rig.auth(1))

    policy = response.headers["content-security-policy"]
    assert "default-src 'none'" in policy
    assert "script-src" not in policy
    assert response.headers["cache-control"] == "no-store"


async def test_a_failed_run_puts_a_red_mark_on_its_task(rig: ApiRig) -> None:
    runs = rig.state.runs
    run = runs.start_run(1, "api", rig.clock.now() - timedelta(minutes=3))
    runs.finish_run(run, RunStatus.FAILED, rig.clock.now(), reason="connection refused")

    page = (await rig.client.get("/", headers=rig.auth(1))).text

    row = page[page.index('id="task-1"') : page.index('id="task-3"')]
    assert "task attention" in page[page.index('id="task-1"') - 40 : page.index('id="task-1"')]
    assert "last run failed" in row
    assert "3.0 min" in row or "3 min 0 s" in row
    assert "1 of 3 tasks need attention." in page


async def test_the_page_lists_the_callers_config_errors_with_file_and_line(rig: ApiRig) -> None:
    broken = configset.task(4, 1).replace("time: 02:30", "time: '25:00'")
    commit_files(rig.repo, {"tasks/4-broken.yaml": broken}, "a broken task")
    await rig.engine.sync()

    ada = unescape((await rig.client.get("/", headers=rig.auth(1))).text)
    grace = (await rig.client.get("/", headers=rig.auth(2))).text

    assert re.search(r"tasks/4-broken\.yaml:\d+</code> <span class=\"field\">schedule", ada)
    assert "tasks/4-broken.yaml" not in grace
    assert rig.engine.revision is not None
    assert rig.engine.revision[:12] in ada


async def test_logging_out_clears_the_cookie(rig: ApiRig) -> None:
    await login(rig)

    response = await rig.client.post("/logout", headers={"Origin": "http://testserver"})

    assert response.status_code == 303
    assert f'{COOKIE}=""' in response.headers["set-cookie"]
    assert (await rig.client.get("/")).status_code == 401


async def test_a_daemon_following_a_remote_shows_the_remote_and_its_last_fetch(
    tmp_path: Path,
) -> None:
    bare = tmp_path / "upstream.git"
    url = shared_with_a_remote(tmp_path / "person", config_files(), bare)

    async with api_rig(tmp_path, clone=True, remote=url, fetch_interval=3600) as rig:
        upstream = rig.daemon.upstream
        assert upstream is not None
        await upstream.fetch()
        page = (await rig.client.get("/", headers=rig.auth())).text

    remote = page[page.index('<section id="remote">') :]
    assert f"file://{bare} (main)" in remote
    assert "Last error</dt><dd>none" in remote
    assert "not yet" not in remote
