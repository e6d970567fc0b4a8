"""Who may use which server route, who owns which prompt and websocket client id, and the refusal counts.

Routes are allowed to non-admins by name (docs/deployment.md, "Routes"): anything not listed —
queue clearing, ``/free``, ``/internal/*`` (logs, file listings), uploads, user data, and every
route another pack adds (e.g. a manager's node installation) — is for admins only.
"""
from __future__ import annotations

import threading
from collections import Counter, OrderedDict
from collections.abc import Mapping

# (method, route path without the /api prefix) a non-admin may call. HEAD counts as GET.
USER_ROUTES = frozenset({
    ("GET", "/"), ("GET", "/ws"), ("GET", "/prompt"), ("POST", "/prompt"),
    ("GET", "/queue"), ("POST", "/queue"), ("GET", "/history"), ("GET", "/history/{prompt_id}"),
    ("POST", "/history"), ("POST", "/interrupt"), ("GET", "/view"),
    ("GET", "/object_info"), ("GET", "/object_info/{node_class}"), ("GET", "/embeddings"), ("GET", "/extensions"),
    ("GET", "/models"), ("GET", "/models/{folder}"), ("GET", "/system_stats"), ("GET", "/features"),
    ("GET", "/settings"), ("GET", "/settings/{id}"), ("GET", "/users"), ("GET", "/i18n"),
    ("GET", "/workflow_templates"), ("GET", "/experiment/models"), ("GET", "/experiment/models/{folder}"),
    ("GET", "/view_metadata/{folder_name}"),
})


def route_key(method: str, canonical: str) -> tuple[str, str]:
    """(method, path) of a matched route, with ComfyUI's ``/api`` twin folded onto the plain route."""
    method = "GET" if method.upper() == "HEAD" else method.upper()
    if canonical.startswith("/api/") or canonical == "/api":
        canonical = canonical[4:] or "/"
    return method, canonical


def user_may_call(method: str, canonical: str) -> bool:
    return route_key(method, canonical) in USER_ROUTES


def user_folder(output_subfolder: str, user: str) -> str:
    return f"{output_subfolder}/{user}"


def view_allowed(query: Mapping[str, str], output_subfolder: str, user: str) -> bool:
    """Whether a non-admin's ``/view`` query names a file in their own output folder.

    Only ``type=output`` (the default), a plain file name (no folder, no ``[output]``-style
    annotation) and a subfolder inside ``<output_subfolder>/<user>``; anything else is refused
    rather than interpreted, so the server's own path handling never sees it.
    """
    filename = query.get("filename", "")
    if not filename or "/" in filename or "\\" in filename or ".." in filename or filename.endswith("]"):
        return False
    if query.get("type", "output") != "output":
        return False
    parts = [p for p in query.get("subfolder", "").split("/") if p not in ("", ".")]
    if "\\" in query.get("subfolder", "") or any(p == ".." for p in parts):
        return False
    mine = user_folder(output_subfolder, user).split("/")
    return parts[:len(mine)] == mine


class Ownership:
    """Thread-safe map of prompt ids and websocket client ids to the user who first used them.

    Bounded: past ``limit`` entries of a kind the oldest are forgotten (an id nobody can guess,
    long finished).
    """

    def __init__(self, limit: int = 100_000) -> None:
        self._lock = threading.Lock()
        self._limit = limit
        self._owners: dict[str, OrderedDict[str, str]] = {}

    def claim(self, kind: str, key: str, user: str) -> bool:
        """Records ``user`` as the owner of ``key``; False when another user owns it already."""
        with self._lock:
            table = self._owners.setdefault(kind, OrderedDict())
            owner = table.get(key)
            if owner is not None:
                return owner == user
            table[key] = user
            while len(table) > self._limit:
                table.popitem(last=False)
            return True

    def owner(self, kind: str, key: str) -> str | None:
        with self._lock:
            return self._owners.get(kind, {}).get(key)


class RefusalLedger:
    """Counts of refused requests by reason code: what the status route reports (never prompt contents)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()

    def add(self, reason: str, n: int = 1) -> None:
        with self._lock:
            self._counts[reason] += n

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(sorted(self._counts.items()))
