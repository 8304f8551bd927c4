"""`/docs` works without internet: every file it loads is served by the daemon itself."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.apirig import ApiRig, api_rig

pytestmark = pytest.mark.anyio


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[ApiRig]:
    async with api_rig(tmp_path) as made:
        yield made


def referenced_urls(html: str) -> list[str]:
    """Every `src=`/`href=` attribute and every `url:` in the page's inline script."""
    attributes = re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)["']""", html)
    scripted = re.findall(r"""\burl\s*:\s*["']([^"']+)["']""", html)
    return attributes + scripted


async def test_the_docs_reference_only_urls_of_the_daemon_itself(rig: ApiRig) -> None:
    page = await rig.client.get("/docs")

    assert page.status_code == 200
    urls = referenced_urls(page.text)
    assert len(urls) >= 3  # the script, the style sheet, the schema (and the icon)
    assert all(url.startswith("/") and not url.startswith("//") for url in urls), urls
    assert "http" not in page.text.replace("http-equiv", "")


async def test_every_url_the_docs_reference_answers_200(rig: ApiRig) -> None:
    page = await rig.client.get("/docs")

    for url in referenced_urls(page.text):
        assert (await rig.client.get(url)).status_code == 200, url


async def test_the_docs_need_no_token(rig: ApiRig) -> None:
    assert (await rig.client.get("/docs/assets/swagger-ui-bundle.js")).status_code == 200
