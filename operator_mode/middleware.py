"""The operator middleware: who is calling, which routes they may use, and what they may see.

Runs first for every request (docs/deployment.md, "Hooks"). Identity comes from the request's
headers only (``psa_model.operator.identity``); the client's ``comfy-user`` header is replaced by
the identified user. Non-admins reach only the routes of ``psa_model.operator.access`` and see
only their own prompts, queue entries, output files and websocket client ids.
"""
from __future__ import annotations

import json
import logging
import uuid

from aiohttp import web
from multidict import CIMultiDict

from psa_model.operator.access import route_key, user_may_call, view_allowed
from psa_model.operator.config import UserPolicy
from psa_model.operator.identity import identify

from .prompt_gate import handle_prompt
from .state import OperatorState, error_response

LOG = logging.getLogger("psa.operator")


def make_middleware(state: OperatorState, server):
    @web.middleware
    async def psa_operator(request: web.Request, handler):
        if state.broken:
            state.refusals.add("config_broken")
            return error_response(503, "config_broken", "This server's operator configuration is broken; "
                                  "nothing runs until the operator fixes it (see the server log)")
        who = identify(state.config, request.headers)
        if who.user is None:
            state.refusals.add("unauthenticated")
            return error_response(401, who.reason, who.message)
        user = who.user
        headers = CIMultiDict(request.headers)
        headers["comfy-user"] = user.name
        request = request.clone(headers=headers)
        resource = request.match_info.route.resource
        canonical = resource.canonical if resource is not None else ""
        if not user.admin and not _may_call(request, resource, canonical):
            state.refusals.add("route_forbidden")
            return error_response(403, "route_forbidden", f"{request.method} {request.path} is for admins only")
        key = route_key(request.method, canonical)
        route = _ROUTES.get(key)
        if route is None:
            return await handler(request)
        return await route(request, handler, user, state)

    return psa_operator


def _may_call(request: web.Request, resource, canonical: str) -> bool:
    if isinstance(resource, web.StaticResource):
        return request.method in ("GET", "HEAD")
    return resource is not None and user_may_call(request.method, canonical)


async def _json_of(response: web.StreamResponse):
    if not isinstance(response, web.Response) or response.status != 200 or response.body is None:
        return None
    return json.loads(response.body)


async def _owned_view(request, handler, user: UserPolicy, keep):
    """Run ``handler``; a non-admin gets its JSON object passed through ``keep`` (own prompts only)."""
    response = await handler(request)
    if user.admin:
        return response
    data = await _json_of(response)
    if not isinstance(data, dict):
        return response
    return web.json_response(keep(data))


async def _history(request, handler, user: UserPolicy, state: OperatorState):
    def keep(data: dict) -> dict:
        return {pid: entry for pid, entry in data.items() if state.owners.owner("prompt", pid) == user.name}
    return await _owned_view(request, handler, user, keep)


async def _queue(request, handler, user: UserPolicy, state: OperatorState):
    def keep(data: dict) -> dict:
        return {name: [item for item in items
                       if len(item) > 1 and state.owners.owner("prompt", str(item[1])) == user.name]
                for name, items in data.items() if isinstance(items, list)}
    return await _owned_view(request, handler, user, keep)


async def _own_deletes(request, handler, user: UserPolicy, state: OperatorState):
    """``POST /queue`` and ``POST /history``: a non-admin may only delete their own prompts, never clear."""
    if user.admin:
        return await handler(request)
    try:
        body = await request.json()
    except ValueError:
        return error_response(400, "malformed_request", "the request body must be a JSON object")
    if not isinstance(body, dict) or body.get("clear") or set(body) - {"delete", "clear"} \
            or not isinstance(body.get("delete", []), list) \
            or any(state.owners.owner("prompt", str(pid)) != user.name for pid in body.get("delete", [])):
        state.refusals.add("route_forbidden")
        return error_response(403, "route_forbidden", "you may delete only your own prompts; clearing is for admins")
    return await handler(request)


async def _interrupt(request, handler, user: UserPolicy, state: OperatorState):
    """A non-admin may interrupt only their own running prompt (by ``prompt_id``); a global interrupt is for admins."""
    if user.admin:
        return await handler(request)
    try:
        body = await request.json()
    except ValueError:
        body = None
    prompt_id = body.get("prompt_id") if isinstance(body, dict) else None
    if not prompt_id or state.owners.owner("prompt", str(prompt_id)) != user.name:
        state.refusals.add("route_forbidden")
        return error_response(403, "route_forbidden", "send the prompt_id of your own running prompt; "
                                                      "interrupting everything is for admins")
    return await handler(request)


async def _view(request, handler, user: UserPolicy, state: OperatorState):
    if not user.admin and not view_allowed(request.query, state.config.output_subfolder, user.name):
        state.refusals.add("view_forbidden")
        return web.Response(status=404)
    return await handler(request)


async def _websocket(request, handler, user: UserPolicy, state: OperatorState):
    """Binds each websocket client id to its user: nobody attaches to another user's id."""
    client_id = request.query.get("clientId", "")
    if not client_id:
        client_id = uuid.uuid4().hex
        request = request.clone(rel_url=request.rel_url.update_query(clientId=client_id))
    if not state.owners.claim("client", client_id, user.name) and not user.admin:
        state.refusals.add("client_id_taken")
        return error_response(403, "client_id_taken", "that clientId belongs to another user")
    return await handler(request)


_ROUTES = {
    ("POST", "/prompt"): handle_prompt,
    ("GET", "/history"): _history,
    ("GET", "/history/{prompt_id}"): _history,
    ("GET", "/queue"): _queue,
    ("POST", "/queue"): _own_deletes,
    ("POST", "/history"): _own_deletes,
    ("POST", "/interrupt"): _interrupt,
    ("GET", "/view"): _view,
    ("GET", "/ws"): _websocket,
}
