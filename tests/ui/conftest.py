"""A headless Chromium driven by selenium, for the dashboard's browser tests.

Debian's `chromium` and `chromium-driver` (`.ci/run` installs them when it can). The tests skip,
saying why, only when the browser cannot run here. Chromium is started so that it never reaches
for the internet (no first-run, sync, component updates or background networking).
"""

from __future__ import annotations

import asyncio
import os
import pathlib
import shutil

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
SHOTS = ROOT / "artifacts" / "ui"
FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--disable-extensions", "--window-size=1280,900", "--lang=en-US",
         "--force-device-scale-factor=1", "--hide-scrollbars")


def _find(name: str) -> str | None:
    """`$CHROMIUM` / `$CHROMEDRIVER` when set, else Debian's."""
    if os.environ.get(name.upper()):
        given = os.environ[name.upper()]
        return given if pathlib.Path(given).exists() else None
    return shutil.which(name) or next((p for p in (f"/usr/bin/{name}", f"/usr/lib/chromium/{name}")
                                       if pathlib.Path(p).exists()), None)


@pytest.fixture(scope="module")
def chrome(tmp_path_factory):
    """A selenium WebDriver on a fresh Chromium profile, downloads going to `driver.downloads`."""
    try:
        from selenium import webdriver
        from selenium.common.exceptions import WebDriverException
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.skip("selenium is not installed: pip install -e '.[test]'")
    binary, driver_path = _find("chromium"), _find("chromedriver")
    if not binary or not driver_path:
        pytest.skip("Chromium cannot run here: chromium or chromedriver is missing "
                    "(apt-get install chromium chromium-driver)")
    downloads = tmp_path_factory.mktemp("downloads")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('profile')}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # the page's console, for the tests
    options.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                              "download.prompt_for_download": False})
    try:
        driver = webdriver.Chrome(service=Service(driver_path), options=options)
    except WebDriverException as exc:
        pytest.skip(f"Chromium cannot run here: {(exc.msg or str(exc)).strip().splitlines()[0]}")
    driver.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
    driver.set_page_load_timeout(20)
    driver.downloads = downloads
    yield driver
    driver.quit()


async def in_browser(fn, *args):
    """Selenium blocks: run it on a thread, so the gateway, served by this test's loop, can answer."""
    return await asyncio.to_thread(fn, *args)
