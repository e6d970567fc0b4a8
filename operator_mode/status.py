"""``GET /psa/operator/status`` (admins only, through the route gate): configured users, the profile
file each is pinned to (names only, never attributes) and the refusal counts by reason."""
from __future__ import annotations

from aiohttp import web

from .state import OperatorState

STATUS_ROUTE = "/psa/operator/status"


def add_status_route(routes: web.RouteTableDef, state: OperatorState) -> None:
    """Registers the route on ComfyUI's table (before ``add_routes``, so ``/api`` gets its twin)."""

    @routes.get(STATUS_ROUTE)
    async def operator_status(request: web.Request) -> web.Response:
        config = state.config
        return web.json_response({
            "mode": "broken" if state.broken else "on",
            "config": config.source if config else None,
            "users": config.describe_users() if config else [],
            "allowed_nodes": sorted(config.allowed_nodes) if config else [],
            "refusals": state.refusals.snapshot(),
        })
