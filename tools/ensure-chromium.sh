#!/usr/bin/env bash
# Makes sure Debian's Chromium is at /usr/lib/chromium/chromium: the browser tests
# (tests/browser.py) drive it through Playwright (never `playwright install`).
# Quiet when it is already installed; otherwise installs Debian's `chromium` package
# (tools/ensure-debian-package.sh: apt-get, through sudo when not root).
set -euo pipefail
exec bash "$(dirname "$0")/ensure-debian-package.sh" chromium "/usr/lib/chromium/chromium (the browser tests)" \
  '[ -x /usr/lib/chromium/chromium ]'
