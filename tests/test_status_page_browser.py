"""The status page and `/docs` in a real headless Chromium (Debian's `chromium` and
`chromium-driver`, driven by Selenium) against `reconciler serve` in its own process: log in
through the form, see the tasks, a failed run's red mark and a broken file's error, log out.

Screenshots are kept in `test-artifacts/browser/` at the repository's root (not in git).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.wait import WebDriverWait

from reconciler.state import open_state
from reconciler.types import RunStatus
from tests import configset
from tests.apirig import config_files
from tests.daemonproc import RunningDaemon, create_token, serving
from tests.gitrepo import commit_files, init_repo

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts" / "browser"
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
HOSTILE = "<img src=x onerror=alert(1)> nightly"
WAIT_SECONDS = 20


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningDaemon]:
    tmp = tmp_path_factory.mktemp("page")
    repo, state = tmp / "config", tmp / "state" / "state.db"
    init_repo(repo, {**config_files(), "tasks/3-hostile.yaml": configset.task(3, 1, label=HOSTILE)})
    token = create_token(state)
    with serving(repo, state, token, tmp / "daemon.log") as running:
        yield running


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,900"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def page(browser: WebDriver, daemon: RunningDaemon) -> WebDriver:
    """The browser on the status page, logged in through the form."""
    browser.delete_all_cookies()
    browser.get(daemon.url + "/")
    browser.find_element(By.ID, "token").send_keys(daemon.token)
    browser.find_element(By.ID, "login").click()
    wait_for(browser, lambda: bool(browser.find_elements(By.ID, "summary")))
    return browser


def wait_for(driver: WebDriver, ready: Callable[[], bool]) -> None:
    WebDriverWait(driver, WAIT_SECONDS).until(lambda _driver: ready())


def screenshot(driver: WebDriver, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    assert driver.save_screenshot(str(ARTIFACTS / f"{name}.png"))


def row_text(driver: WebDriver, task_id: int) -> str:
    return str(driver.find_element(By.ID, f"task-{task_id}").text)


def test_logging_in_through_the_form_shows_the_users_tasks(
    browser: WebDriver, daemon: RunningDaemon
) -> None:
    browser.delete_all_cookies()
    browser.get(daemon.url + "/")
    screenshot(browser, "status-page-login")
    browser.find_element(By.ID, "token").send_keys(daemon.token)
    browser.find_element(By.ID, "login").click()
    wait_for(browser, lambda: bool(browser.find_elements(By.ID, "summary")))

    rows = browser.find_elements(By.CSS_SELECTOR, "tr.task")
    assert [row.get_attribute("data-task-id") for row in rows] == ["1", "3", "7"]
    assert browser.find_element(By.CSS_SELECTOR, "#task-3 .label").text == HOSTILE
    assert not browser.find_elements(By.TAG_NAME, "img")  # the label stayed text
    assert len(browser.find_elements(By.CSS_SELECTOR, "#task-1 .cell")) == 30
    assert "Shop database" in row_text(browser, 7)
    cookie = browser.get_cookie("reconciler_token")
    assert cookie is not None
    assert cookie["httpOnly"] is True
    assert cookie["sameSite"] == "Strict"
    screenshot(browser, "status-page-tasks")


def test_a_failed_run_shows_a_red_mark(page: WebDriver, daemon: RunningDaemon) -> None:
    state = open_state(daemon.repo.parent / "state" / "state.db")
    try:
        now = datetime.now(UTC)
        run = state.runs.start_run(1, "api", now - timedelta(seconds=42))
        state.runs.finish_run(run, RunStatus.FAILED, now, reason="connection refused")
    finally:
        state.close()

    page.refresh()

    marked = page.find_elements(By.CSS_SELECTOR, "tr.task.attention")
    assert [row.get_attribute("data-task-id") for row in marked] == ["1"]
    mark = page.find_element(By.CSS_SELECTOR, "#task-1 .mark")
    assert mark.value_of_css_property("background-color") == "rgba(217, 45, 32, 1)"
    assert "failed" in row_text(page, 1)
    assert (
        page.find_element(By.CSS_SELECTOR, "#task-1 .cell:last-child").get_attribute("data-state")
        == "failure"
    )
    assert "need attention" in page.find_element(By.ID, "summary").text
    screenshot(page, "status-page-failed-run")


def test_a_broken_file_shows_its_error_with_file_and_line(
    page: WebDriver, daemon: RunningDaemon
) -> None:
    broken = configset.task(4, 1).replace("time: 02:30", "time: '25:00'")
    commit_files(daemon.repo, {"tasks/4-broken.yaml": broken}, "a broken task")

    def shown() -> bool:
        page.refresh()
        return bool(page.find_elements(By.CSS_SELECTOR, ".config-error"))

    wait_for(page, shown)

    (error,) = page.find_elements(By.CSS_SELECTOR, ".config-error")
    assert error.find_element(By.CSS_SELECTOR, ".where").text.startswith("tasks/4-broken.yaml:")
    assert "25:00" in error.find_element(By.CSS_SELECTOR, ".message").text
    screenshot(page, "status-page-config-error")


def test_logging_out_returns_to_the_login_form(page: WebDriver, daemon: RunningDaemon) -> None:
    page.find_element(By.ID, "logout").click()
    wait_for(page, lambda: bool(page.find_elements(By.ID, "login-form")))

    assert page.get_cookie("reconciler_token") is None
    page.get(daemon.url + "/")
    assert page.find_elements(By.ID, "login-form")
    assert not page.find_elements(By.CSS_SELECTOR, "tr.task")


def test_the_docs_render_their_operations_from_the_daemons_own_files(
    browser: WebDriver, daemon: RunningDaemon
) -> None:
    browser.get(daemon.url + "/docs")
    wait_for(browser, lambda: bool(browser.find_elements(By.CSS_SELECTOR, ".opblock")))

    paths = {
        element.text for element in browser.find_elements(By.CSS_SELECTOR, ".opblock-summary-path")
    }
    assert {"/api/backup-tasks", "/api/sync"} <= {path.replace("\u200b", "") for path in paths}
    loaded = browser.execute_script(
        "return performance.getEntriesByType('resource').map(entry => entry.name)"
    )
    assert loaded
    assert all(str(url).startswith(daemon.url + "/") for url in loaded), loaded
    screenshot(browser, "docs")
