"""Operator mode's ComfyUI layer: identity, the prompt check and per-user isolation on a shared server.

Off unless the environment variable ``PSA_OPERATOR_CONFIG`` names a configuration file
(docs/deployment.md). When it does, :func:`install_from_environment` — called by the pack before
its nodes load — adds to ComfyUI's ``PromptServer``, through public hooks present in ComfyUI
0.3.75 and current ComfyUI:

* an aiohttp middleware, first in ``app.middlewares`` (the app is not frozen while custom nodes
  load): identity on every request, the route gate, the ``/prompt`` check and the filters of
  ``/history``, ``/queue``, ``/view`` and ``/ws`` (``middleware.py``);
* an on-prompt handler (``add_on_prompt_handler``) that hands ComfyUI the graph the middleware
  checked and pinned, never the client's own (``prompt_gate.py``);
* the admin-only route ``GET /psa/operator/status`` (``status.py``).

A configuration that cannot be read or is wrong locks the server (every request answers 503).
If the layer itself cannot be installed, the process exits rather than serve unchecked prompts.
"""
from __future__ import annotations

import logging
import os

from psa_model.operator.config import ENV_VAR

LOG = logging.getLogger("psa.operator")


def install_from_environment() -> bool:
    """Installs operator mode when ``PSA_OPERATOR_CONFIG`` is set; returns whether it did."""
    path = os.environ.get(ENV_VAR, "").strip()
    if not path:
        return False
    try:
        # Loaded only when operator mode is configured (and inside the try: a failure stops the process).
        from server import PromptServer  # noqa: PLC0415

        from .middleware import make_middleware  # noqa: PLC0415
        from .prompt_gate import on_prompt  # noqa: PLC0415
        from .state import OperatorState  # noqa: PLC0415
        from .status import add_status_route  # noqa: PLC0415

        server = PromptServer.instance
        state = OperatorState.load(path)
        server.app.middlewares.insert(0, make_middleware(state, server))
        server.add_on_prompt_handler(on_prompt)
        add_status_route(server.routes, state)
    except Exception as exc:  # noqa: BLE001 - any failure here must stop the server, not leave it open
        LOG.critical("PSA operator mode is configured (%s=%s) but could not be installed: %s: %s. Stopping "
                     "ComfyUI rather than serving prompts unchecked.", ENV_VAR, path, type(exc).__name__, exc)
        raise SystemExit(3) from exc
    if state.broken:
        LOG.error("PSA operator mode: %s. Every request is refused (503) until the configuration is fixed and "
                  "ComfyUI restarted.", state.broken)
    else:
        LOG.info("PSA operator mode on: %d user(s) from %s", len(state.config.users), path)
    return True
