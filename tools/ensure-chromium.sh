#!/usr/bin/env bash
# Makes sure Debian's Chromium is at /usr/lib/chromium/chromium: the browser tests
# (tests/browser.py) drive it through Playwright (never `playwright install`).
# Quiet when it is already installed; otherwise installs Debian's `chromium` package with
# apt-get, through sudo when not root.
set -euo pipefail

chromium=/usr/lib/chromium/chromium
[ -x "$chromium" ] && exit 0

fail() {
  echo "error: $chromium is missing and could not be installed ($1)." >&2
  echo "       Install Debian's Chromium as root, then run again:" >&2
  echo "         apt-get update && apt-get install -y --no-install-recommends chromium" >&2
  exit 1
}

command -v apt-get >/dev/null 2>&1 || fail "no apt-get: not a Debian-like system"
if [ "$(id -u)" -eq 0 ]; then
  as_root() { "$@"; }
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  as_root() { sudo -n "$@"; }
else
  fail "not root, and sudo is missing or asks for a password"
fi

echo "installing Debian's chromium package for the browser tests (apt-get)" >&2
as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2 || fail "apt-get update failed"
as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >&2 \
  || fail "apt-get install chromium failed"
[ -x "$chromium" ] || fail "the chromium package did not provide $chromium"
