"""Who is calling: a bearer token, or a trusted proxy's user header with its shared secret.

Secrets are compared as SHA-256 digests with :func:`hmac.compare_digest`, against every
configured digest, so the time taken does not depend on how much of a guess was right
(docs/deployment.md, "Identity"). The client's own ``comfy-user`` header is never read.
"""
from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Mapping
from dataclasses import dataclass

from .config import OperatorConfig, UserPolicy


def sha256_hex(secret: str) -> str:
    """The digest stored in the configuration for a token or the proxy secret."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def new_token() -> str:
    """A fresh random bearer token (256 bits, URL-safe)."""
    return secrets.token_urlsafe(32)


def _same(secret: str, digest: str) -> bool:
    return hmac.compare_digest(sha256_hex(secret).encode("ascii"), digest.encode("ascii"))


@dataclass(frozen=True)
class Identified:
    """The outcome of :func:`identify`: the user, or why there is none (a reason code and a message)."""

    user: UserPolicy | None
    reason: str = ""
    message: str = ""


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is None:  # plain dicts in tests; aiohttp's headers are case-insensitive already
        lowered = name.lower()
        value = next((v for k, v in headers.items() if k.lower() == lowered), None)
    return value


def identify(config: OperatorConfig, headers: Mapping[str, str]) -> Identified:
    """The configured user a request comes from, judged from its headers only.

    ``Authorization: Bearer <token>`` is checked first; a request that carries a token is judged
    by the token alone (a wrong one is refused, never retried as a proxy request). Otherwise,
    when a proxy is configured, its secret header must match and its user header must name a
    configured user.
    """
    auth = _header(headers, "Authorization")
    if auth is not None:
        scheme, _, token = auth.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return Identified(None, "bad_authorization", "the Authorization header must be 'Bearer <token>'")
        found = None
        for user in config.users.values():  # every digest is compared: no early exit on a match
            if user.token_sha256 and _same(token, user.token_sha256) and found is None:
                found = user
        if found is None:
            return Identified(None, "unknown_token", "the bearer token is not valid")
        return Identified(found)
    proxy = config.proxy
    if proxy is not None:
        secret = _header(headers, proxy.secret_header)
        name = _header(headers, proxy.user_header)
        if secret is None and name is None:
            return Identified(None, "no_identity", "no credentials: send 'Authorization: Bearer <token>' or come "
                              "through the operator's proxy")
        if secret is None or not _same(secret, proxy.secret_sha256):
            return Identified(None, "bad_proxy_secret", "the proxy's shared secret is missing or wrong")
        user = config.users.get((name or "").strip())
        if user is None:
            return Identified(None, "unknown_user", "the proxy named a user who is not configured")
        return Identified(user)
    return Identified(None, "no_identity", "no credentials: send 'Authorization: Bearer <token>'")
