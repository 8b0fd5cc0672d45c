#!/usr/bin/env bash
# Install Debian's chromium for the browser tests of `flawmap serve` (tests/serve/test_browser.py).
# Playwright drives it via executable_path; Playwright's own browser download is never used.
# Usage: bash scripts/install_browser.sh
set -euo pipefail

if [ -x /usr/bin/chromium ]; then
    echo "chromium already installed: /usr/bin/chromium"
    exit 0
fi

# Root runs apt-get directly; anyone else needs sudo.
SUDO=()
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO=(sudo)
    else
        echo "install_browser.sh: not root and no sudo; install Debian's chromium by hand" >&2
        exit 1
    fi
fi

export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" apt-get update -q
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -q --no-install-recommends chromium
echo "chromium installed: $(/usr/bin/chromium --version 2>/dev/null || echo /usr/bin/chromium)"
