"""Command-line flags for headless Debian Chromium on a closed, containerised machine.

Shared by the browser tests (tests/browser.py) and the page-vs-talk benchmark (bench/web_dead_air.py).
"""

HEADLESS_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",  # containers often have a 64 MB /dev/shm
    "--use-fake-device-for-media-stream",
    "--autoplay-policy=no-user-gesture-required",
]
