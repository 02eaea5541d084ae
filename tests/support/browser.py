"""A real headless Chromium for the web page's tests: Debian's `chromium` (`make setup` installs it), driven by
Playwright (whose own browser download is not used). Without it the test is skipped, saying how to get it."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def chromium_path() -> str | None:
    return os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


@contextmanager
def launch_chromium() -> Iterator[Any]:
    executable = chromium_path()
    if executable is None:
        pytest.skip("no chromium on this machine: `make setup` installs Debian's package as root "
                    "(apt-get install -y chromium), or set CHROMIUM=/path/to/chromium")
    playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright is in the dev extra")
    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_FLAGS)
        try:
            yield browser
        finally:
            browser.close()
