"""The dashboard in a real headless Chromium, against a real server and scheduler.

Needs Debian's ``chromium`` and ``chromium-driver`` and the ``selenium`` package. Locally the
test skips (saying what is missing) without them; under CI (``CI`` set) it fails instead.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from aiosched.config import ApiConfig
from aiosched.web import serve

from .conftest import SchedulerFactory

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
TOKEN = "dashboard-token"
WAIT = 15.0


def _missing() -> list[str]:
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not (p.exists() and os.access(p, os.X_OK))]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("the selenium package")
    return missing


@pytest.fixture
def browser_available() -> None:
    missing = _missing()
    if missing:
        reason = (
            f"headless browser test needs {', '.join(missing)} (apt-get install chromium chromium-driver; "
            "pip install selenium)"
        )
        if os.environ.get("CI"):
            pytest.fail(f"under CI: {reason}")
        pytest.skip(reason)


async def noop() -> None:
    return None


async def broken() -> None:
    raise RuntimeError("disk full on /var/reports")


def _driver(profile: Path) -> Any:
    from selenium import webdriver

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--no-first-run",
        f"--user-data-dir={profile}",
        "--window-size=1280,900",
    ):
        options.add_argument(flag)
    return webdriver.Chrome(service=webdriver.ChromeService(executable_path=str(CHROMEDRIVER)), options=options)


def drive(url: str, profile: Path) -> dict[str, Any]:
    """Runs in a worker thread (Selenium blocks): load, pause job 'a' with the token, return what was seen."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    seen: dict[str, Any] = {}
    driver = _driver(profile)
    try:
        # a row is rebuilt when its job changes: look elements up again rather than fail on a stale one
        wait = WebDriverWait(driver, WAIT, ignored_exceptions=(StaleElementReferenceException,))

        def click(selector: str) -> None:
            wait.until(lambda d: d.find_element(By.CSS_SELECTOR, selector).click() or True)

        driver.get(url)
        wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, 'tr[data-job="b"]')))
        seen["row_a"] = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, 'tr[data-job="a"]').text)
        state = (By.CSS_SELECTOR, 'tr[data-job="a"] [data-field="state"]')
        seen["state_before"] = wait.until(lambda d: d.find_element(*state).text)
        # the failed run is listed; its error is behind a <details>
        click("#runs details summary")
        seen["error"] = wait.until(ec.visibility_of_element_located((By.CSS_SELECTOR, "#runs details pre"))).text
        # pausing without the token: the page asks for it
        click('button[data-action="pause"][data-job="a"]')
        wait.until(ec.visibility_of_element_located((By.ID, "token-form")))
        seen["banner"] = wait.until(ec.visibility_of_element_located((By.ID, "banner"))).text
        driver.find_element(By.ID, "token").send_keys(TOKEN)
        driver.find_element(By.ID, "token-save").click()
        click('button[data-action="pause"][data-job="a"]')
        wait.until(ec.text_to_be_present_in_element(state, "paused"))
        seen["state_after"] = wait.until(lambda d: d.find_element(*state).text)
        resume = 'button[data-action="resume"][data-job="a"]'
        seen["resume_button"] = bool(wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, resume)))
        seen["stored_token"] = driver.execute_script("return localStorage.getItem('aiosched.token')")
        # a phone-sized window: no sideways scrolling, the jobs become cards
        driver.set_window_size(390, 844)
        seen["overflow"] = driver.execute_script(
            "return document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        seen["head_hidden"] = driver.execute_script(
            "return getComputedStyle(document.querySelector('#jobs thead')).display"
        )
        seen["console"] = [e for e in driver.get_log("browser") if e.get("level") == "SEVERE"]
    finally:
        driver.quit()
    return seen


async def test_dashboard_shows_jobs_and_pauses_one(
    browser_available: None, make_scheduler: SchedulerFactory, tmp_path: Path
) -> None:
    s, _ = await make_scheduler()
    await s.add_job(noop, "interval", hours=1, id="a", name="Hourly sync")
    await s.add_job(broken, "cron", hour=3, id="b", name="Nightly report")
    await s.run_job("b", wait=True)
    async with await serve(s, ApiConfig(port=0, token=TOKEN)) as server:
        seen = await asyncio.to_thread(drive, server.url, tmp_path / "profile")
    assert "Hourly sync" in seen["row_a"] and "every 1h" in seen["row_a"]
    assert seen["state_before"] == "scheduled"
    assert "RuntimeError: disk full on /var/reports" in seen["error"]
    assert "token" in seen["banner"]
    assert seen["state_after"] == "paused" and seen["resume_button"]
    assert seen["stored_token"] == TOKEN
    assert (await s.get_job("a")).paused and not (await s.get_job("b")).paused
    assert seen["overflow"] <= 0 and seen["head_hidden"] == "none"
    # the only console error allowed is the 401 of the token-less pause
    assert all("401" in e["message"] for e in seen["console"]), seen["console"]
    shutil.rmtree(tmp_path / "profile", ignore_errors=True)
