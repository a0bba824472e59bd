#!/usr/bin/env bash
# Makes sure Debian's PostgreSQL server binaries are installed (/usr/lib/postgresql/<version>/bin):
# the tests of shared studies (tests/test_shared_study.py) start a throw-away server from them on a
# loopback port (tests/pg_server.py) and stop it afterwards. Quiet when they are there; otherwise
# installs Debian's `postgresql` package with apt-get, through sudo when not root.
set -euo pipefail

ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && exit 0

fail() {
  echo "error: PostgreSQL's server binaries are missing and could not be installed ($1)." >&2
  echo "       Install Debian's PostgreSQL as root, then run again:" >&2
  echo "         apt-get update && apt-get install -y --no-install-recommends postgresql" >&2
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

echo "installing Debian's postgresql package for the shared-study tests (apt-get)" >&2
as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2 || fail "apt-get update failed"
as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql >&2 \
  || fail "apt-get install postgresql failed"
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || fail "the package did not provide initdb"
