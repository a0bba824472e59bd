#!/usr/bin/env bash
# Makes sure Debian's PostgreSQL server binaries are installed (/usr/lib/postgresql/<version>/bin):
# the tests of shared studies (tests/test_shared_study.py) start a throw-away server from them on a
# loopback port (tests/pg_server.py) and stop it afterwards. Quiet when they are there; otherwise
# installs Debian's `postgresql` package (tools/ensure-debian-package.sh: apt-get, through sudo
# when not root).
set -euo pipefail
exec bash "$(dirname "$0")/ensure-debian-package.sh" postgresql "PostgreSQL's server binaries (the shared-study tests)" \
  'ls /usr/lib/postgresql/*/bin/initdb'
