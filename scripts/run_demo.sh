#!/usr/bin/env bash
# The main job on a fresh machine: provision the host (idempotent), then run the multi-profile
# comparison workflow headless. Extra arguments go to scripts/run_demo.py (see --help).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/host_env.sh"
exec "$PSA_PYTHON" -m scripts.run_demo "$@"
