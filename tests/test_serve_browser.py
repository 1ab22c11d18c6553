"""``resultkit serve`` in a real browser: Debian's Chromium driven by Selenium.

The set-up installs ``chromium`` and ``chromium-driver`` with apt-get when they
are missing (as root); without them the tests skip, and fail under CI=true.
Screenshots go to the test's folder; with RESULTKIT_UPDATE_SCREENSHOTS=1 they
also replace the ones docs/serve.md shows (docs/images/serve-*.png).
"""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import services
from tests.conftest import ROOT
from tests.test_find import ALL
from tests.test_serve import serve as serve_fixture
from tests.test_serve import sqlite_url as sqlite_url_fixture

# The fixtures of tests/test_serve.py, under their own names here.
serve = serve_fixture
sqlite_url = sqlite_url_fixture

pytestmark = pytest.mark.timeout(600)

DRIVER = "/usr/bin/chromedriver"
BROWSER = "/usr/bin/chromium"


def _install_chromium() -> None:
    """apt-get install chromium chromium-driver, when this process may."""
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    command = ["apt-get", "install", "-y", "-qq", "chromium", "chromium-driver"]
    if subprocess.run(command, env=env, capture_output=True, check=False).returncode != 0:
        subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True, check=False)
        subprocess.run(command, env=env, capture_output=True, check=False)


@pytest.fixture(scope="session")
def downloads(tmp_path_factory: Any) -> Path:
    """The folder Chromium downloads into."""
    return Path(tmp_path_factory.mktemp("downloads"))


@pytest.fixture(scope="session")
def chromium(downloads: Path) -> Iterator[Any]:
    """A headless Chromium under Selenium (installed first when missing), downloading
    into *downloads* without asking."""
    if not (os.path.exists(DRIVER) and os.path.exists(BROWSER)):
        _install_chromium()
    missing = [p for p in (DRIVER, BROWSER) if not os.path.exists(p)]
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        missing.append("selenium (pip install -e '.[dev]')")
    if missing:
        message = (
            f"no browser to test with: {', '.join(missing)} "
            "(apt-get install chromium chromium-driver)"
        )
        if services.in_ci():
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    options = webdriver.ChromeOptions()
    options.binary_location = BROWSER
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--window-size=1280,900",
    ):
        options.add_argument(argument)
    options.add_experimental_option(
        "prefs",
        {
            "download.default_directory": str(downloads),
            "download.prompt_for_download": False,
            "safebrowsing.enabled": False,
        },
    )
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    driver.set_page_load_timeout(60)
    # Headless Chromium downloads only where the DevTools protocol says
    driver.execute_cdp_cmd(
        "Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)}
    )
    try:
        yield driver
    finally:
        driver.quit()


def shot(driver: Any, tmp_path: Path, name: str) -> None:
    path = tmp_path / f"serve-{name}.png"
    driver.save_screenshot(str(path))
    if os.environ.get("RESULTKIT_UPDATE_SCREENSHOTS") == "1":
        target = ROOT / "docs" / "images"
        target.mkdir(exist_ok=True)
        shutil.copy(path, target / path.name)


def follow(driver: Any, element: Any) -> None:
    """Click *element* and wait until the page it leads to is loaded (not the old one)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    old = driver.find_element(By.TAG_NAME, "html")
    element.click()
    wait = WebDriverWait(driver, 60)
    wait.until(expected_conditions.staleness_of(old))
    wait.until(lambda d: d.execute_script("return document.readyState") == "complete")


def downloaded(folder: Path, name: str, seconds: float = 60) -> Path:
    """The file *name* once Chromium has finished downloading it into *folder*."""
    path = folder / name
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if path.exists() and not list(folder.glob("*.crdownload")):
            return path
        time.sleep(0.2)
    raise AssertionError(f"no {name} downloaded: {sorted(p.name for p in folder.iterdir())}")


def test_a_user_filters_pages_exports_opens_and_erases_in_chromium(
    chromium: Any, serve: Any, sqlite_url: str, tmp_path: Path, downloads: Path
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    driver = chromium
    server = serve(sqlite_url, "--allow-writes", "--audit-log", str(tmp_path / "audit.log"))
    # Given the list, every result is there
    driver.get(server.base + "/")
    rows = driver.find_elements(By.CSS_SELECTOR, "#results tbody tr")
    assert len(rows) == len(ALL)
    shot(driver, tmp_path, "list")
    # When the form filters the failures, two to a page
    state = driver.find_element(By.NAME, "state")
    state.send_keys("FAILURE")
    limit = driver.find_element(By.NAME, "limit")
    limit.clear()
    limit.send_keys("2")
    follow(driver, driver.find_element(By.CSS_SELECTOR, "form.filters button[type=submit]"))
    # Then the URL holds the filters, and the pages hold the three failures
    assert "state=FAILURE" in driver.current_url
    first = [a.text for a in driver.find_elements(By.CSS_SELECTOR, "#results tbody a")]
    assert len(first) == 2
    shot(driver, tmp_path, "filtered")
    follow(driver, driver.find_element(By.ID, "next"))
    second = [a.text for a in driver.find_elements(By.CSS_SELECTOR, "#results tbody a")]
    assert set(first + second) == {"w1-fail", "w2-c2", "w3-weekly"}
    # When the filter's results are exported as CSV from the second page
    for old in downloads.iterdir():
        old.unlink()
    Select(driver.find_element(By.CSS_SELECTOR, "#export-form select")).select_by_value("csv")
    driver.find_element(By.CSS_SELECTOR, "#export-form button").click()
    # Then the downloaded file holds exactly the filtered results (not the page's)
    with downloaded(downloads, "results.csv").open(newline="") as handle:
        exported = [row["task_id"] for row in csv.DictReader(handle)]
    assert sorted(exported) == ["w1-fail", "w2-c2", "w3-weekly"]
    # When a result is opened, its exception and traceback are shown
    follow(driver, driver.find_element(By.LINK_TEXT, second[0]))
    assert driver.find_element(By.ID, "traceback").text.startswith("Traceback")
    shot(driver, tmp_path, "result")
    # The failures and health pages
    driver.get(server.base + "/failures")
    assert len(driver.find_elements(By.CSS_SELECTOR, "#failures tbody tr")) == 3
    shot(driver, tmp_path, "failures")
    driver.get(server.base + "/health")
    assert driver.find_element(By.ID, "by-state").is_displayed()
    shot(driver, tmp_path, "health")
    # When the failures are erased: first a count, then the confirmation
    driver.get(server.base + "/?state=FAILURE")
    follow(driver, driver.find_element(By.CSS_SELECTOR, "#erase-form button"))
    assert "Erase 3 results?" in driver.find_element(By.TAG_NAME, "h1").text
    shot(driver, tmp_path, "erase")
    follow(driver, driver.find_element(By.CSS_SELECTOR, "#confirm-form button"))
    assert "3 of 3 results erased" in driver.find_element(By.ID, "deleted").text
    driver.get(server.base + "/?state=FAILURE")
    assert "no result on this page" in driver.find_element(By.ID, "results").text


def test_writes_are_refused_in_chromium_without_allow_writes(
    chromium: Any, serve: Any, sqlite_url: str
) -> None:
    from selenium.webdriver.common.by import By

    server = serve(sqlite_url)
    chromium.get(server.base + "/?state=FAILURE")
    # No write button is offered, and a form posted anyway is refused
    assert not chromium.find_elements(By.ID, "erase-form")
    chromium.execute_script(
        "const f = document.createElement('form'); f.method = 'post'; f.action = '/erase';"
        "document.body.appendChild(f); f.submit();"
    )
    assert "--allow-writes" in chromium.find_element(By.ID, "error").text
