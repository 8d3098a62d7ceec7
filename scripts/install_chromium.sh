#!/usr/bin/env bash
# Headless Chromium + its driver from Debian's packages, for the web playground's browser tests.
# Idempotent: does nothing when Chromium is there. Without root (or password-less sudo) it says
# so and exits 0: the browser tests then skip with the same hint.
set -euo pipefail
if [ -x /usr/bin/chromium ] || command -v chromium >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" -eq 0 ]; then
    SUDO=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    SUDO=(sudo -n)
else
    echo ">> Chromium is not installed and installing it needs root: the browser tests will skip" >&2
    echo "   (sudo apt-get install -y chromium chromium-driver)" >&2
    exit 0
fi
echo ">> installing Chromium for the browser tests (apt-get install chromium chromium-driver)"
"${SUDO[@]}" apt-get update -qq
DEBIAN_FRONTEND=noninteractive "${SUDO[@]}" apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null
