#!/usr/bin/env bash
# The Python that runs this project's command lines: the provisioned venv (torch + ComfyUI 0.3.75's
# requirements + this pack's), set up first if needed (idempotent; seconds once done), with the
# checkout importable from any folder. PSA_PYTHON / COMFYUI_PATH select existing ones instead.
#   bash scripts/python.sh -m training.train_psa --help
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
env_lines=$(bash "$ROOT/scripts/provision.sh" 2> >(grep -v -e "is ignored: it is neither" -e "host ready:" >&2))
eval "export $(echo "$env_lines" | grep '^COMFYUI_PATH=')"
eval "export $(echo "$env_lines" | grep '^PSA_PYTHON=')"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
exec "$PSA_PYTHON" "$@"
