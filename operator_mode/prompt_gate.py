"""``POST /prompt``: check and pin the graph in the middleware, then hand the pinned body to ComfyUI.

ComfyUI's on-prompt handlers may rewrite the body, but an exception in one is logged and the
*unchanged* body is queued — so the check cannot live there (it would fail open). It runs in the
middleware, which can answer 400 itself; the body it accepted travels to :func:`on_prompt`
through a context variable of the request's task, and that handler replaces whatever ComfyUI
parsed with it. A prompt that reaches ComfyUI without passing the middleware loses its graph
(ComfyUI then answers "no prompt").
"""
from __future__ import annotations

import contextvars
import logging
import uuid

from aiohttp import web

from psa_model.operator.config import UserPolicy
from psa_model.operator.graph import PromptRefused, check_and_pin, problems_to_node_errors

from .state import OperatorState, error_response, node_signature

LOG = logging.getLogger("psa.operator")
_CHECKED: contextvars.ContextVar[dict | None] = contextvars.ContextVar("psa_operator_checked_prompt", default=None)


class _Refused(Exception):
    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status, self.reason, self.message = status, reason, message


def on_prompt(json_data: dict) -> dict:
    """ComfyUI's on-prompt hook: the body the middleware checked, or one without a graph."""
    checked = _CHECKED.get()
    if checked is None:
        LOG.error("a prompt reached ComfyUI without the operator check; it is dropped")
        return {}
    return checked


def _claim_ids(body: dict, user: UserPolicy, state: OperatorState) -> dict:
    out = dict(body)
    extra = out.get("extra_data", {})
    if not isinstance(extra, dict):
        raise _Refused(400, "malformed_request", "extra_data must be an object")
    # Without a client id ComfyUI sends the run's progress and previews to every websocket.
    client_id = out.get("client_id") or extra.get("client_id") or uuid.uuid4().hex
    if not isinstance(client_id, str) or not state.owners.claim("client", client_id, user.name):
        if not user.admin:
            raise _Refused(403, "client_id_taken", "client_id belongs to another user's connection; "
                                                   "use the id your own /ws connection was given")
    out["client_id"] = client_id
    prompt_id = str(out.get("prompt_id") or uuid.uuid4())
    if not state.owners.claim("prompt", prompt_id, user.name):
        raise _Refused(409, "prompt_id_taken", "prompt_id is already in use; leave it out to get a new one")
    out["prompt_id"] = prompt_id
    if not user.admin:  # first come, first served: no queue jumping
        out.pop("number", None)
        out.pop("front", None)
    return out


def _count_refusal(state: OperatorState, user: UserPolicy, reasons: list[str]) -> None:
    for reason in sorted(set(reasons)):
        state.refusals.add(reason)
    LOG.info("refused a prompt of user '%s': %s", user.name, ", ".join(sorted(set(reasons))))


async def handle_prompt(request: web.Request, handler, user: UserPolicy, state: OperatorState) -> web.StreamResponse:
    """Checks and pins one ``POST /prompt`` (or ``/api/prompt``); any error refuses it."""
    try:
        try:
            body = await request.json()
        except ValueError:
            raise _Refused(400, "malformed_request", "the request body must be a JSON object") from None
        if not isinstance(body, dict):
            raise _Refused(400, "malformed_request", "the request body must be a JSON object")
        checked = _claim_ids(body, user, state)
        if "prompt" in checked:
            checked["prompt"] = check_and_pin(checked["prompt"], user, state.config, node_signature)
    except PromptRefused as exc:
        _count_refusal(state, user, [p.reason for p in exc.problems])
        return error_response(400, "refused", "Prompt refused by operator policy", str(exc),
                              problems_to_node_errors(exc.problems))
    except _Refused as exc:
        _count_refusal(state, user, [exc.reason])
        return error_response(exc.status, exc.reason, exc.message)
    except Exception as exc:  # noqa: BLE001 - fail closed: an error in the check refuses the prompt
        _count_refusal(state, user, ["internal_error"])
        LOG.error("operator check failed (%s); the prompt was refused", type(exc).__name__)
        return error_response(500, "internal_error", "The operator check failed; the prompt was not queued")
    token = _CHECKED.set(checked)
    try:
        return await handler(request)
    finally:
        _CHECKED.reset(token)
