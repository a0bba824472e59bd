#!/usr/bin/env bash
# Creates (or reuses) the project's environment in .venv/ from requirements/standalone.txt.
#   tools/ensure-venv.sh [PIN_FILE [LINK]]   e.g. requirements/a1111.txt .venv-a1111
#
# The venv itself lives in a cache folder keyed by the pin file's hash and the Python version
# (default ~/.cache/sd-optim, override with SD_OPTIM_VENV_CACHE), and .venv is a link to it,
# so fresh clones on the same machine (CI) reuse it and a changed pin file builds a new one.
set -euo pipefail
cd "$(dirname "$0")/.."

pins="${1:-requirements/standalone.txt}"
link="${2:-.venv}"
py="${SD_OPTIM_PYTHON:-}"
if [ -z "$py" ]; then
  for candidate in python3.11 python3.10 python3; do
    if command -v "$candidate" >/dev/null 2>&1 && "$candidate" -c 'import sys; assert sys.version_info[:2] in ((3, 10), (3, 11))' 2>/dev/null; then
      py="$candidate"; break
    fi
  done
fi
[ -n "$py" ] || { echo "error: Python 3.10 or 3.11 is needed (set SD_OPTIM_PYTHON)" >&2; exit 1; }

pyver=$("$py" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
key=$( (cat "$pins"; echo "$pyver") | sha256sum | cut -c1-16)
cache="${SD_OPTIM_VENV_CACHE:-$HOME/.cache/sd-optim}"
target="$cache/venv-$key"
stamp="$target/.sd-optim-ready"

if [ ! -f "$stamp" ]; then
  echo "building the environment in $target (once per pin file; about 2 minutes)" >&2
  rm -rf "$target"
  mkdir -p "$cache"
  "$py" -m venv "$target"
  # torch first (pinned, so pip never fetches another build), then the full pin list, which
  # also pins what torch pulled in (numpy, pillow, ...) back to the verified versions.
  torch_pins=$(grep -E '^(torch|torchvision)==' "$pins" | tr '\n' ' ')
  "$target/bin/pip" install --quiet --disable-pip-version-check $torch_pins 2>&1 | grep -v '^WARNING: Location' >&2 || true
  "$target/bin/pip" install --quiet --disable-pip-version-check -r "$pins" 2>&1 | grep -v '^WARNING: Location' >&2 || true
  "$target/bin/pip" check >&2
  "$target/bin/python" -c 'import torch, sd_mecha, optuna, diffusers, open_clip' >&2
  touch "$stamp"
fi

if [ -L "$link" ] || [ ! -e "$link" ]; then
  ln -sfn "$target" "$link"
elif [ ! -f "$link/.sd-optim-ready" ]; then
  echo "error: $link exists and was not made by this script; move it away and run again" >&2
  exit 1
fi
