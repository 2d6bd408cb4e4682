"""Headless Debian Chromium driven by Selenium, for the tests of the web pages.

Selenium's calls block, so every call runs in a worker thread (``trio.to_thread``) while the
daemon under test keeps serving on the trio loop of the test.
"""

from __future__ import annotations

import functools
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import trio
from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
# The machine's network is closed: keep Chromium from calling home (it would stall on lookups).
FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
    "--window-size=1280,900",
)
WAIT = 15.0
T = TypeVar("T")


def available() -> bool:
    """Whether Debian's chromium and chromium-driver are installed (scripts/test.sh does it)."""
    return shutil.which(CHROMIUM) is not None and shutil.which(CHROMEDRIVER) is not None


class Browser:
    """One Chromium with its own profile (so two of them are two unrelated users)."""

    def __init__(self, *, mobile: bool = False) -> None:
        self.profile = Path(tempfile.mkdtemp(prefix="wstund-chromium-"))
        self.downloads = self.profile / "downloads"
        self.downloads.mkdir()
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for flag in FLAGS:
            options.add_argument(flag)
        options.add_argument(f"--user-data-dir={self.profile / 'profile'}")
        if mobile:
            options.add_experimental_option("mobileEmulation", {"deviceName": "Pixel 7"})
        options.add_experimental_option(
            "prefs",
            {
                "download.default_directory": str(self.downloads),
                "download.prompt_for_download": False,
                "safebrowsing.enabled": False,
            },
        )
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        self.driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
        self.driver.set_page_load_timeout(WAIT)
        self.driver.set_script_timeout(WAIT)

    def close(self) -> None:
        """Quit Chromium and drop its profile."""
        try:
            self.driver.quit()
        finally:
            shutil.rmtree(self.profile, ignore_errors=True)

    # Every public coroutine below runs the blocking Selenium call in a thread.
    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a blocking function in a worker thread."""
        return await trio.to_thread.run_sync(functools.partial(fn, *args))

    async def get(self, url: str) -> None:
        """Load ``url`` and wait for its load event."""
        await self.call(self.driver.get, url)

    async def js(self, script: str, *args: Any) -> Any:
        """Run ``script`` (a function body; ``arguments`` holds args) in the page; its value."""
        return await self.call(self.driver.execute_script, script, *args)

    async def js_async(self, script: str, *args: Any) -> Any:
        """Run an async script: it calls ``arguments[arguments.length - 1](value)`` to finish."""
        return await self.call(self.driver.execute_async_script, script, *args)

    async def wait_js(self, expression: str, timeout: float = WAIT) -> Any:
        """Wait until the JavaScript ``expression`` is truthy in the page; return its value."""

        def wait() -> Any:
            try:
                return WebDriverWait(self.driver, timeout, poll_frequency=0.05).until(
                    lambda d: d.execute_script(f"return ({expression});")
                )
            except TimeoutException:
                raise AssertionError(
                    f"still false after {timeout} s: {expression}\nconsole: {self.console()}"
                ) from None

        return await self.call(wait)

    async def find(self, css: str, timeout: float = WAIT) -> WebElement:
        """The first element matching ``css``, waiting for it to be displayed."""

        def wait() -> WebElement:
            try:
                return WebDriverWait(self.driver, timeout, poll_frequency=0.05).until(
                    lambda d: next(
                        (e for e in d.find_elements(By.CSS_SELECTOR, css) if e.is_displayed()),
                        False,
                    )
                )
            except TimeoutException:
                raise AssertionError(
                    f"no visible {css!r} after {timeout} s\nconsole: {self.console()}"
                ) from None

        return await self.call(wait)

    async def click(self, css: str) -> None:
        """Click the first visible element matching ``css``."""
        element = await self.find(css)
        await self.call(element.click)

    async def type(self, css: str, text: str, *, clear: bool = True) -> None:
        """Type ``text`` into the first visible field matching ``css``."""
        element = await self.find(css)
        if clear:
            await self.call(element.clear)
        await self.call(element.send_keys, text)

    async def text(self, css: str) -> str:
        """The visible text of the first visible element matching ``css``."""
        element = await self.find(css)
        return await self.call(lambda: element.text)

    async def screenshot(self, path: Path) -> None:
        """Save a PNG of the viewport."""
        await self.call(self.driver.save_screenshot, str(path))

    def console(self) -> list[str]:
        """The page's console messages so far (for failure reports)."""
        try:
            return [entry["message"] for entry in self.driver.get_log("browser")]
        except Exception:  # the driver may be gone already
            return []
