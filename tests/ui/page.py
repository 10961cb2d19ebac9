"""The dashboard as a test sees it: the few reads and clicks the browser tests need (sync: run
each through `conftest.in_browser`)."""

from __future__ import annotations

import csv
import pathlib
import time

from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import Select, WebDriverWait

from tests.ui.conftest import SHOTS


class Dashboard:
    def __init__(self, driver, url: str) -> None:
        self.driver = driver
        self.url = url

    def wait(self, condition, timeout: float = 10.0):
        return WebDriverWait(self.driver, timeout).until(condition)

    def find(self, css: str):
        return self.driver.find_element(By.CSS_SELECTOR, css)

    def shown(self, css: str):
        return self.wait(ec.visibility_of_element_located((By.CSS_SELECTOR, css)))

    def open(self) -> None:
        self.driver.get(self.url + "/ui")
        self.driver.execute_script("sessionStorage.clear()")
        self.driver.get(self.url + "/ui")

    def log_in(self, key: str) -> None:
        field = self.shown("#key")
        field.clear()
        field.send_keys(key)
        self.find("#login-submit").click()

    def loaded(self) -> None:
        """Wait for a refresh to end with figures on the page."""
        self.shown("#dash")
        self.wait(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("aria-busy") == "false"
                  and d.find_element(By.ID, "updated").text.startswith("Updated"))

    def total(self, name: str) -> str:
        return self.find(f"#total-{name}").get_attribute("data-value")

    def card(self, name: str) -> tuple[str, str]:
        card = self.find(f"#total-{name}")
        return card.find_element(By.CLASS_NAME, "value").text, card.find_element(By.CLASS_NAME, "sub").text

    def rows(self, table: str = "#groups") -> list[list[str]]:
        body = self.find(f"{table} tbody")
        return [[c.text for c in tr.find_elements(By.CSS_SELECTOR, "th, td")]
                for tr in body.find_elements(By.TAG_NAME, "tr")]

    def group_by(self, value: str, name: str) -> None:
        Select(self.find("#group")).select_by_value(value)
        self.wait(lambda d: d.find_element(By.ID, "group-name").text == name)
        self.loaded()

    def custom_window(self, start: str, end: str) -> None:
        """Choose a custom window: `start` and `end` as the inputs take them, `2025-01-04T14:30` (UTC)."""
        Select(self.find("#window")).select_by_value("custom")
        self.shown("#custom")
        self.driver.execute_script("document.getElementById('from').value = arguments[0];"
                                   "document.getElementById('to').value = arguments[1];", start, end)
        self.find("#apply").click()
        self.wait(lambda d: d.find_element(By.ID, "span").text.startswith(start.replace("T", " ")))
        self.loaded()

    def sort(self, column: str) -> None:
        self.find(f'#groups thead button[data-column="{column}"]').click()

    def download_csv(self) -> list[list[str]]:
        before = set(self.driver.downloads.iterdir())
        self.find("#csv").click()

        def landed(_):
            new = [p for p in set(self.driver.downloads.iterdir()) - before if p.suffix == ".csv"]
            return new[0] if new else False

        path: pathlib.Path = self.wait(landed)
        with path.open(newline="") as f:
            return list(csv.reader(f))

    def viewport(self, width: int, height: int = 900, mobile: bool = False) -> None:
        self.driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
            "width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile})
        # The charts redraw to the new width after a resize (debounced): wait for it.
        self.wait(lambda d: d.execute_script(
            "const p = document.querySelector('#charts .plot');"
            "if (!p || p.offsetParent === null) return true;"
            "const s = p.querySelector('svg');"
            "return !!s && s.getAttribute('width') == String(Math.max(p.clientWidth, 240));"))

    def overflows(self) -> bool:
        return self.driver.execute_script(
            "return document.documentElement.scrollWidth > document.documentElement.clientWidth")

    def screenshot(self, name: str, width: int = 1280, mobile: bool = False) -> pathlib.Path:
        """The whole page at `width` CSS pixels, into artifacts/ui/NAME.png."""
        self.viewport(width, 900, mobile)
        height = self.driver.execute_script("return document.documentElement.scrollHeight")
        self.viewport(width, min(max(height, 600), 4000), mobile)
        time.sleep(0.05)  # one frame for the layout to settle before the capture
        SHOTS.mkdir(parents=True, exist_ok=True)
        path = SHOTS / f"{name}.png"
        self.driver.save_screenshot(str(path))
        return path
