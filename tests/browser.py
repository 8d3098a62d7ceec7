"""Headless Chromium (Debian's package) driven by Playwright, for the web playground's tests.

`make test` installs Chromium (scripts/install_chromium.sh); where it is missing the browser
tests skip with a message saying how to get it. The fake microphone plays a WAV once
(`%noloop`) or, without one, Chromium's built-in beep.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bench.chromium import HEADLESS_FLAGS

CHROMIUM_HINT = "apt-get install -y chromium (make test installs it)"
FLAGS = HEADLESS_FLAGS
# The README's screenshot is retaken only on request (UPDATE_SCREENSHOTS=1 make test), so a
# plain test run leaves the tracked image, and the work tree, as they were.
SCREENSHOTS = (
    Path(__file__).resolve().parent.parent / "docs" / "images"
    if os.environ.get("UPDATE_SCREENSHOTS") == "1"
    else Path(tempfile.gettempdir()) / "voice-agent-screenshots"
)


def chromium_path() -> str | None:
    """The system Chromium (env CHROMIUM overrides), or None."""
    path = os.environ.get("CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    return path if Path(path).exists() else None


def chromium() -> str:
    """The system Chromium, or skip the test saying how to install it."""
    path = chromium_path()
    if path is None:
        pytest.skip(f"no Chromium installed: {CHROMIUM_HINT}")
    try:
        import playwright  # noqa: F401
    except ImportError:
        pytest.skip("playwright is not installed (pip install -e '.[dev]')")
    return path


@contextlib.asynccontextmanager
async def page(
    *, microphone: Path | None = None, allow_microphone: bool = True, height: int = 900, enforce_csp: bool = False
) -> AsyncIterator[Any]:
    """A fresh page in a fresh headless Chromium; `microphone` is a WAV played once as the mic.

    `wait_for` evaluates strings in the page, which the page's own Content-Security-Policy (no
    eval) refuses: it is bypassed unless `enforce_csp`, where tests wait on selectors instead.
    """
    from playwright.async_api import async_playwright

    executable = chromium()
    flags = list(FLAGS)
    if allow_microphone:
        flags.append("--use-fake-ui-for-media-stream")
    else:
        flags.append("--deny-permission-prompts")
    if microphone is not None:
        flags.append(f"--use-file-for-fake-audio-capture={microphone}%noloop")
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=executable, args=flags, headless=True)
        try:
            context = await browser.new_context(viewport={"width": 900, "height": height}, bypass_csp=not enforce_csp)
            tab = await context.new_page()
            console: list[str] = []
            tab.on("console", lambda msg: console.append(f"{msg.type}: {msg.text}"))
            tab.on("pageerror", lambda error: console.append(f"pageerror: {error}"))
            tab.console_log = console
            yield tab
        finally:
            await browser.close()


async def wait_for(tab: Any, expression: str, timeout_s: float, what: str) -> Any:
    """Wait until the page's JS `expression` is truthy; fail naming `what` and the page's state."""
    try:
        handle = await tab.wait_for_function(expression, timeout=timeout_s * 1000)
    except Exception as error:
        state = await tab.evaluate("JSON.stringify(window.voiceAgent)")
        raise AssertionError(
            f"{what}: not within {timeout_s} s ({type(error).__name__}); page {state}; console {tab.console_log[-20:]!r}"
        ) from None
    return await handle.json_value()
