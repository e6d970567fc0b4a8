#!/usr/bin/env bash
# The whole test suite on a fresh machine: provision the host (idempotent), lint (ruff, configured
# in pyproject.toml; a finding stops the run), then all three tiers.
#   bash scripts/test.sh [pytest args]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/host_env.sh"
# Headless Chromium for tests/server/test_browser.py (Debian package; idempotent, never fatal).
command -v chromium >/dev/null 2>&1 || { command -v apt-get >/dev/null 2>&1 \
    && { DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null 2>&1 \
         || { apt-get update -qq >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null 2>&1; }; }; } \
    || echo "chromium unavailable: the browser test will skip" >&2
# nginx for tests/server/test_operator.py's run through docs/nginx-psa-operator.conf (the test starts its own
# nginx on a free loopback port; the package's system service is not used). Idempotent, never fatal.
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || { command -v apt-get >/dev/null 2>&1 \
    && { DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx >/dev/null 2>&1 \
         || { apt-get update -qq >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx >/dev/null 2>&1; }; }; } \
    || echo "nginx unavailable: the operator-mode proxy test will skip" >&2
"$PSA_PYTHON" -m ruff --version >/dev/null 2>&1 \
    || { echo "ruff is missing from $PSA_PYTHON: install requirements-dev.txt into it (pip install -r requirements-dev.txt)" >&2; exit 1; }
"$PSA_PYTHON" -m ruff check --quiet . \
    || { echo "lint failed: fix the findings above (ruff check --fix fixes some), then re-run" >&2; exit 1; }
export PYTHONUNBUFFERED=1
exec "$PSA_PYTHON" -m pytest "$@"
