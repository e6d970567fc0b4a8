# Sourced by scripts/test.sh and scripts/run_demo.sh: provision the host (idempotent) and export
# COMFYUI_PATH and PSA_PYTHON for what follows.
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
env_lines=$(bash scripts/provision.sh 2> >(grep -v "is ignored: it is neither" >&2))
eval "export $(echo "$env_lines" | grep '^COMFYUI_PATH=')"
eval "export $(echo "$env_lines" | grep '^PSA_PYTHON=')"
