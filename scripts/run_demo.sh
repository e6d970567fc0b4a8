#!/usr/bin/env bash
# The main job on a fresh machine: provision the host (idempotent), then run the multi-profile
# comparison workflow headless. Extra arguments go to scripts/run_demo.py (see --help).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
env_lines=$(bash scripts/provision.sh 2> >(grep -v "is ignored: it is neither" >&2))
eval "export $(echo "$env_lines" | grep '^COMFYUI_PATH=')"
eval "export $(echo "$env_lines" | grep '^PSA_PYTHON=')"
exec "$PSA_PYTHON" -m scripts.run_demo "$@"
