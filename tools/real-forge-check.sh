#!/usr/bin/env bash
# Checks sd-optim's Forge host against a real Forge (lllyasviel/stable-diffusion-webui-forge main,
# CPU only, offline), from scratch into DIR, reusing whatever is already there:
#
#   [FORGE_GIT=… HG_GIT=… BLIP_GIT=… ASSETS_GIT=…] [FORGE_PINS=…] tools/real-forge-check.sh DIR
#
# Needed: DIR (where everything goes; reused when run again). Optional: the four *_GIT sources
# (local git mirrors for an offline machine; GitHub by default), FORGE_PINS (the verified Forge
# pin list; default requirements/standalone.txt), FORGE_COMMIT, PORT, PYTHON.
#
#   1. Forge at FORGE_COMMIT in DIR/forge, with the repositories its launcher would clone
#      (huggingface_guess, BLIP, the assets) at the commits it pins;
#   2. a Python 3.11 venv in DIR/venv: torch, the verified Forge pin list, then what Forge's
#      requirements_versions.txt adds, constrained by the pins (setuptools >= 77 for torch 2.14,
#      < 81 because pytorch_lightning and Forge's installers import pkg_resources);
#   3. two random full-size SD1.5 checkpoints (fp16) in DIR/forge/models/Stable-diffusion (written
#      with the venv's sd-mecha, before step 4 takes it out);
#   4. this repository's committed HEAD cloned into DIR/forge/extensions/sd-optim (sd-optim's own
#      packages are removed from the venv, so its install.py installs them as in a user's
#      Forge; FRESH_EXTENSION_DEPS=0 skips that);
#   5. Forge launched (nice) with --api --always-cpu --no-half --skip-torch-cuda-test on PORT;
#   6. tools/real_forge_check.py check: txt2img, save-best and keep-best runs, stop and 409;
#   7. Forge stopped (unless KEEP_RUNNING=1; SETUP_ONLY=1 stops after step 4). Its console is DIR/forge-console.log, the check's
#      images and result.json are in DIR/check-<time>/.
#
# Offline: the sources come from local git mirrors when FORGE_GIT etc. point at them; packages
# come from the package index.
# The launcher must not reinstall Forge's own pins over the verified set, so REQS_FILE points at
# Forge's requirement names at the installed versions, and two built-in extensions whose
# installers pip-install unpinned packages at every start (forge_legacy_preprocessors,
# sd_forge_controlnet: mediapipe, onnxruntime, ... which pull numpy 2 and protobuf 7, and wheels
# from GitHub) are disabled in config.json.
set -euo pipefail

[ $# -eq 1 ] || { sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
ROOT="$(mkdir -p "$1" && cd "$1" && pwd)"
REPO="$(cd "$(dirname "$0")/.." && pwd)"
PORT="${PORT:-7861}"
PY="${PYTHON:-python3.11}"
PINS="${FORGE_PINS:-$REPO/requirements/standalone.txt}"  # the verified Forge-like pin list
[ -f "$PINS" ] || { echo "error: FORGE_PINS: no such file, got '$PINS'" >&2; exit 1; }

FORGE_COMMIT="${FORGE_COMMIT:-dfdcbab685e57677014f05a3309b48cc87383167}"
FORGE_GIT="${FORGE_GIT:-https://github.com/lllyasviel/stable-diffusion-webui-forge.git}"
HG_GIT="${HG_GIT:-https://github.com/lllyasviel/huggingface_guess.git}"
BLIP_GIT="${BLIP_GIT:-https://github.com/salesforce/BLIP.git}"
ASSETS_GIT="${ASSETS_GIT:-https://github.com/AUTOMATIC1111/stable-diffusion-webui-assets.git}"

FORGE="$ROOT/forge"
VENV="$ROOT/venv"
log() { echo "== $*" >&2; }

checkout() {  # checkout URL DIR COMMIT
  local fresh=0
  if [ ! -d "$2/.git" ]; then
    git clone -q --no-checkout "$1" "$2"
    fresh=1  # no work tree yet, even when the clone's HEAD already is COMMIT
  fi
  if [ "$fresh" = 1 ] || [ "$(git -C "$2" rev-parse HEAD 2>/dev/null)" != "$3" ]; then
    # a mirror may lack a large file (BLIP.gif): HEAD is what Forge's launcher checks
    git -C "$2" checkout -q --detach "$3" 2>/dev/null || git -C "$2" checkout -q --detach "$3" || true
  fi
  [ "$(git -C "$2" rev-parse HEAD)" = "$3" ] || { echo "error: $2 is not at $3" >&2; exit 1; }
}

# --- 1. sources ---------------------------------------------------------------------------------
log "Forge $FORGE_COMMIT from $FORGE_GIT"
checkout "$FORGE_GIT" "$FORGE" "$FORGE_COMMIT"
# the commits Forge's launcher pins (modules/launch_utils.py prepare_environment)
pinned() { sed -n "s/.*'$1', \"\([0-9a-f]\{40\}\)\".*/\1/p" "$FORGE/modules/launch_utils.py"; }
mkdir -p "$FORGE/repositories"
checkout "$HG_GIT" "$FORGE/repositories/huggingface_guess" "$(pinned HUGGINGFACE_GUESS_HASH)"
checkout "$BLIP_GIT" "$FORGE/repositories/BLIP" "$(pinned BLIP_COMMIT_HASH)"
checkout "$ASSETS_GIT" "$FORGE/repositories/stable-diffusion-webui-assets" "$(pinned ASSETS_COMMIT_HASH)"

# --- 2. the venv --------------------------------------------------------------------------------
stamp="$VENV/.real-forge-ready"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$(sha256sum "$PINS" "$FORGE/requirements_versions.txt" "$REPO/tools/real-forge-check.sh" | sha256sum)" ]; then
  log "venv in $VENV (pins: $PINS)"
  [ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
  pip() { "$VENV/bin/pip" install --quiet --disable-pip-version-check "$@" 2>&1 | { grep -v '^WARNING: Location' >&2 || true; }; }
  pip $(grep -E '^(torch|torchvision)==' "$PINS" | tr '\n' ' ')
  pip -r "$PINS"
  # Forge's requirements that the pin list does not name, at Forge's versions
  "$VENV/bin/python" - "$PINS" "$FORGE/requirements_versions.txt" > "$ROOT/forge-extra-reqs.txt" <<'EOF'
import re, sys
norm = lambda s: re.sub(r"[-_.]+", "-", s).lower()
pins = {norm(l.split("==")[0]) for l in open(sys.argv[1]) if "==" in l and not l.lstrip().startswith("#")}
for line in open(sys.argv[2]):
    line = line.split("#")[0].strip()
    name = re.split(r"[=<>~!\[ ]", line, maxsplit=1)[0]
    if line and norm(name) not in pins and norm(name) != "setuptools":
        print(line)
print("setuptools>=77,<81")  # torch 2.14 needs >= 77; pkg_resources (pytorch_lightning) is gone in 81
print("clip-anytorch")  # the launcher's is_installed("clip") would fetch openai/CLIP from GitHub
print("joblib")  # soft-inpainting imports it; a normal install gets it through the disabled installers
EOF
  pip -r "$ROOT/forge-extra-reqs.txt" -c "$PINS"
  "$VENV/bin/pip" check >&2
  sha256sum "$PINS" "$FORGE/requirements_versions.txt" "$REPO/tools/real-forge-check.sh" | sha256sum > "$stamp"
fi
# --- 3. checkpoints (sd-mecha writes them: before it leaves the venv below) -----------------------------------------------------------------------------
CKPT="$FORGE/models/Stable-diffusion"
nice -n 10 "$VENV/bin/python" "$REPO/tools/real_forge_check.py" checkpoints "$CKPT"
rm -f "$CKPT"/run1-save-best-*.safetensors  # what earlier checks saved (2 GB each)

# A Forge install has none of sd-optim's packages and Forge's tqdm pin: take them out again so the
# extension's install.py does its real job at start (FRESH_EXTENSION_DEPS=0 keeps them)
if [ "${FRESH_EXTENSION_DEPS:-1}" = 1 ]; then
  "$VENV/bin/pip" uninstall -y -q sd-mecha optuna cmaes alembic colorlog sqlalchemy mako fuzzywuzzy \
    python-levenshtein levenshtein rapidfuzz 2>&1 | { grep -v -e '^WARNING: Skipping' -e '^WARNING: Location' >&2 || true; }
  "$VENV/bin/pip" install -q --disable-pip-version-check "$(grep -E '^tqdm==' "$FORGE/requirements_versions.txt")" \
    2>&1 | { grep -v '^WARNING: Location' >&2 || true; }
fi
"$VENV/bin/python" "$REPO/tools/real_forge_check.py" reqs-met "$FORGE" "$ROOT/reqs-met.txt"

# built-in extensions whose installers would pip-install unpinned packages at every start
"$VENV/bin/python" - "$FORGE/config.json" <<'EOF'
import json, os, sys
path = sys.argv[1]
cfg = json.load(open(path)) if os.path.exists(path) else {}
off = set(cfg.get("disabled_extensions", [])) | {"forge_legacy_preprocessors", "sd_forge_controlnet"}
cfg["disabled_extensions"] = sorted(off)
json.dump(cfg, open(path, "w"), indent=4)
EOF

# --- 4. the extension (committed HEAD) ----------------------------------------------------------
rm -rf "$FORGE/extensions/sd-optim"
git clone -q "$REPO" "$FORGE/extensions/sd-optim"
# EXT_PATCHES: space-separated diffs applied to the clone (local workarounds, never committed)
for patch in ${EXT_PATCHES:-}; do
  git -C "$FORGE/extensions/sd-optim" apply "$(cd "$(dirname "$patch")" && pwd)/$(basename "$patch")"
  log "applied $patch to the extension clone"
done
log "extension at $(git -C "$FORGE/extensions/sd-optim" log --oneline -1)"

[ "${SETUP_ONLY:-0}" = 1 ] && { log "set up in $ROOT (SETUP_ONLY=1: not launching)"; exit 0; }

# --- 5. launch ----------------------------------------------------------------------------------
if curl -s -o /dev/null "http://127.0.0.1:$PORT/"; then
  echo "error: something already listens on port $PORT" >&2; exit 1
fi
log "launching Forge on port $PORT (console: $ROOT/forge-console.log)"
t0=$(date +%s.%N)
( cd "$FORGE" && REQS_FILE="$ROOT/reqs-met.txt" HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 \
    exec setsid nice -n 10 "$VENV/bin/python" launch.py --api --always-cpu --no-half \
    --skip-torch-cuda-test --skip-version-check --no-download-sd-model --port "$PORT" \
    > "$ROOT/forge-console.log" 2>&1 ) &
pid=$!
echo "$pid" > "$ROOT/forge.pid"
stop_forge() {
  if [ "${KEEP_RUNNING:-0}" != 1 ] && kill -0 "$pid" 2>/dev/null; then
    log "stopping Forge (pid $pid)"
    kill -- "-$pid" 2>/dev/null || kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  fi
}
trap stop_forge EXIT
ready=0
for _ in $(seq 1 600); do
  kill -0 "$pid" 2>/dev/null || { tail -40 "$ROOT/forge-console.log" >&2; echo "error: Forge exited" >&2; exit 1; }
  curl -s -o /dev/null -f "http://127.0.0.1:$PORT/sd-optim/status" && { ready=1; break; }
  # a failed UI build kills Forge's webui thread but not the process: nothing will ever answer
  grep -q "^Exception in thread .*webui_worker" "$ROOT/forge-console.log" && break
  sleep 1
done
if [ "$ready" != 1 ]; then
  tail -40 "$ROOT/forge-console.log" >&2; echo "error: Forge did not serve /sd-optim/status" >&2; exit 1
fi
startup=$(echo "$(date +%s.%N) - $t0" | bc)
log "Forge answers after $startup s"

# --- 6. the check -------------------------------------------------------------------------------
out="$ROOT/check-$(date +%Y%m%d-%H%M%S)"
rc=0
"$VENV/bin/python" "$REPO/tools/real_forge_check.py" check --url "http://127.0.0.1:$PORT" \
  --a "$CKPT/rf-a.safetensors" --b "$CKPT/rf-b.safetensors" --out "$out" \
  --runs "$FORGE/outputs/sd-optim-check" || rc=$?
echo "startup_seconds=$startup" > "$out/startup.txt"
cp "$ROOT/forge-console.log" "$out/forge-console.log"
log "results in $out (exit $rc)"
exit "$rc"
