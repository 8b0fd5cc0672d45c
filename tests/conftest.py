"""Shared fixtures (the synthetic data helpers live in tests/synthetic.py).

The browser tests drive Debian's Chromium through Playwright (``executable_path``; Playwright's
own browser download is never used: ``bash scripts/install_browser.sh`` installs the browser).
Without it they skip, except where CI promises a browser (``FLAWMAP_REQUIRE_BROWSER=1``): there
they fail.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.synthetic import write_mvtec_category


@pytest.fixture(scope="session")
def mvtec_category(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic MVTec-layout category shared by the tests that only read it."""
    return write_mvtec_category(tmp_path_factory.mktemp("data") / "widget")


def _unavailable(reason: str) -> None:
    """Fail where CI promises a browser (FLAWMAP_REQUIRE_BROWSER=1), skip elsewhere."""
    if os.environ.get("FLAWMAP_REQUIRE_BROWSER") == "1":
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def chromium_path() -> str:
    """Debian's Chromium, with the playwright package to drive it."""
    path = "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else shutil.which("chromium")
    if not path:
        _unavailable("Debian chromium not installed: run bash scripts/install_browser.sh")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        _unavailable("the playwright Python package is not installed: pip install playwright")
    return str(path)


@pytest.fixture(scope="module")
def browser(chromium_path: str) -> Iterator[Any]:
    """A headless Chromium (one per test module)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path, args=["--no-sandbox"])
        yield browser
        browser.close()
