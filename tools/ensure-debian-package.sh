#!/usr/bin/env bash
# Installs a Debian package unless what it provides is already there; used by
# tools/ensure-chromium.sh and tools/ensure-postgres.sh.
#   tools/ensure-debian-package.sh PACKAGE 'WHAT IT PROVIDES' 'SHELL TEST'
# Quiet when the test passes; otherwise installs PACKAGE with apt-get (through sudo when not root),
# and fails with the command to run by hand when that is not possible.
set -euo pipefail

package=$1 what=$2 present=$3
bash -c "$present" >/dev/null 2>&1 && exit 0

fail() {
  echo "error: $what is missing and could not be installed ($1)." >&2
  echo "       Install Debian's $package package as root, then run again:" >&2
  echo "         apt-get update && apt-get install -y --no-install-recommends $package" >&2
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

echo "installing Debian's $package package ($what, apt-get)" >&2
as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2 || fail "apt-get update failed"
as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$package" >&2 \
  || fail "apt-get install $package failed"
bash -c "$present" >/dev/null 2>&1 || fail "the $package package did not provide it"
