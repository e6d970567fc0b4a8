"""Operator mode's configuration file: users, their policy, and how the server learns who is calling.

The file is TOML (``.toml``) or JSON (``.json``); both hold the same tables (docs/deployment.md,
"The configuration file"). Every key is checked: an unknown key, a wrong type or a weak value
is an error that names the key and what to write instead, because a typo in a security policy
must not silently loosen it. Secrets are stored only as SHA-256 hex digests.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

try:
    import tomllib
except ImportError:  # Python < 3.11: JSON configurations only
    tomllib = None  # type: ignore[assignment]

ENV_VAR = "PSA_OPERATOR_CONFIG"
USER_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")

# Node types a non-admin may use unless the configuration lists its own (docs/deployment.md, "Allowed nodes").
# Stock samplers are here because the graph check lets them run only on a MODEL from PSA Apply Profile.
DEFAULT_ALLOWED_NODES = (
    "CheckpointLoaderSimple", "CLIPTextEncode", "EmptyLatentImage", "VAEDecode", "SaveImage",
    "KSampler", "KSamplerAdvanced",
    "PSAModelPatcher", "PSALoadProfile", "PSAProfileBatch", "PSAApplyProfile", "PSAKSampler",
    "PSAImageGrid", "PSASaveImageRedacted",
    # the reference-settings route (workflows/psa_*_reference): a sampler and schedule that take the
    # model from PSA Apply Profile like any sampler, SAMPLER nodes without a model, literal prompts
    "SamplerCustom", "BasicScheduler", "PSATextEncodeLiteral", "PSAPLMSSampler", "PSAPLMSSchedule",
    "PSAEulerSampler",
)


class ConfigError(ValueError):
    """The operator configuration is missing or wrong; the message says which key and how to fix it."""


@dataclass(frozen=True)
class UserPolicy:
    """One configured user: who they are, how they prove it, and what their prompts are pinned to."""

    name: str
    admin: bool = False
    profile: str | None = None          # file name inside the psa_profiles folders
    adapter: str | None = None          # file name inside the psa_adapters folders (None: any adapter there)
    min_psa_scale: float = 1.0
    token_sha256: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class ProxyIdentity:
    """A trusted reverse proxy names the user in ``user_header`` and proves itself with a shared secret."""

    user_header: str
    secret_header: str
    secret_sha256: str = field(repr=False)


@dataclass(frozen=True)
class OperatorConfig:
    users: dict[str, UserPolicy]
    proxy: ProxyIdentity | None = None
    allowed_nodes: frozenset[str] = frozenset(DEFAULT_ALLOWED_NODES)
    output_subfolder: str = "psa_users"
    source: str = ""

    def describe_users(self) -> list[dict[str, Any]]:
        """Names, profile file names and limits of every user: what the status route shows (no secrets)."""
        return [{"name": u.name, "admin": u.admin, "profile": u.profile, "adapter": u.adapter,
                 "min_psa_scale": None if u.admin else u.min_psa_scale} for u in self.users.values()]


_TOP_KEYS = {"identity", "policy", "users"}
_IDENTITY_KEYS = {"proxy_user_header", "proxy_secret_header", "proxy_secret_sha256"}
_POLICY_KEYS = {"allowed_nodes", "output_subfolder"}
_USER_KEYS = {"admin", "profile", "adapter", "min_psa_scale", "token_sha256"}
_HEADER = re.compile(r"^[A-Za-z0-9-]{1,64}$")
_RESERVED_HEADERS = {"authorization", "comfy-user", "host", "origin", "cookie", "content-type", "content-length"}


def _table(value: Any, where: str) -> dict:
    if not isinstance(value, dict):
        raise ConfigError(f"{where} must be a table (TOML [section] / JSON object), not {type(value).__name__}")
    return value


def _no_unknown(table: dict, allowed: set[str], where: str) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; allowed keys are {sorted(allowed)}")


def _digest(value: Any, where: str) -> str:
    if not isinstance(value, str) or not SHA256_HEX.match(value):
        raise ConfigError(f"{where} must be the 64 lowercase hex characters of a SHA-256 digest; make one with "
                          "'python -m psa_model.operator token' (it prints a new token and its digest)")
    return value


def _relative_file(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{where} must be a file name inside its model folder (a non-empty string)")
    parts = value.replace("\\", "/").split("/")
    if value.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", value) or ".." in parts:
        raise ConfigError(f"{where} '{value}' must be relative to its model folder, without '..'")
    return value


def _user(name: str, raw: Any) -> UserPolicy:
    where = f"users.{name}"
    if not USER_NAME.match(name):
        raise ConfigError(f"user name '{name}' must be 1-64 letters, digits, '_' or '-' (it names an output folder)")
    raw = _table(raw, where)
    _no_unknown(raw, _USER_KEYS, where)
    admin = raw.get("admin", False)
    if not isinstance(admin, bool):
        raise ConfigError(f"{where}.admin must be true or false")
    scale = raw.get("min_psa_scale", 1.0)
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale) or scale < 0:
        raise ConfigError(f"{where}.min_psa_scale must be a finite number >= 0 (1.0 = the adapter as trained)")
    profile = raw.get("profile")
    if profile is not None:
        profile = _relative_file(profile, f"{where}.profile")
    elif not admin:
        raise ConfigError(f"{where}.profile is missing: every non-admin user needs a profile file (in psa_profiles)")
    adapter = raw.get("adapter")
    if adapter is not None:
        adapter = _relative_file(adapter, f"{where}.adapter")
    token = raw.get("token_sha256")
    if token is not None:
        token = _digest(token, f"{where}.token_sha256")
    return UserPolicy(name=name, admin=admin, profile=profile, adapter=adapter, min_psa_scale=float(scale),
                      token_sha256=token)


def _proxy(identity: dict) -> ProxyIdentity | None:
    present = [k for k in sorted(_IDENTITY_KEYS) if k in identity]
    if not present:
        return None
    if len(present) != len(_IDENTITY_KEYS):
        missing = sorted(_IDENTITY_KEYS - set(present))
        raise ConfigError(f"identity: a trusted proxy needs all of proxy_user_header, proxy_secret_header and "
                          f"proxy_secret_sha256; missing {missing}")
    headers = []
    for key in ("proxy_user_header", "proxy_secret_header"):
        value = identity[key]
        if not isinstance(value, str) or not _HEADER.match(value) or value.lower() in _RESERVED_HEADERS:
            raise ConfigError(f"identity.{key} must be a header name of letters, digits and '-' that ComfyUI or "
                              f"browsers do not use themselves (not one of {sorted(_RESERVED_HEADERS)})")
        headers.append(value)
    if headers[0].lower() == headers[1].lower():
        raise ConfigError("identity: proxy_user_header and proxy_secret_header must be different headers")
    return ProxyIdentity(headers[0], headers[1], _digest(identity["proxy_secret_sha256"],
                                                         "identity.proxy_secret_sha256"))


def parse_config(raw: Any, source: str = "") -> OperatorConfig:
    """Checks a decoded configuration (dict) and returns it as an :class:`OperatorConfig`."""
    raw = _table(raw, "the configuration")
    _no_unknown(raw, _TOP_KEYS, "the configuration")
    identity = _table(raw.get("identity", {}), "identity")
    _no_unknown(identity, _IDENTITY_KEYS, "identity")
    policy = _table(raw.get("policy", {}), "policy")
    _no_unknown(policy, _POLICY_KEYS, "policy")
    users_raw = _table(raw.get("users", {}), "users")
    if not users_raw:
        raise ConfigError("users: no user is configured; add at least one [users.NAME] table")
    users = {name: _user(name, value) for name, value in users_raw.items()}
    proxy = _proxy(identity)
    tokens = [u.token_sha256 for u in users.values() if u.token_sha256]
    if len(tokens) != len(set(tokens)):
        raise ConfigError("users: two users have the same token_sha256; give each user their own token")
    if proxy is None and not tokens:
        raise ConfigError("nobody can sign in: configure a trusted proxy ([identity] proxy_*) or give users a "
                          "token_sha256")
    allowed = policy.get("allowed_nodes", list(DEFAULT_ALLOWED_NODES))
    if not isinstance(allowed, list) or not all(isinstance(n, str) and n for n in allowed):
        raise ConfigError("policy.allowed_nodes must be a list of node type names (class_type), e.g. [\"KSampler\"]")
    sub = policy.get("output_subfolder", "psa_users")
    if not isinstance(sub, str) or not USER_NAME.match(sub):
        raise ConfigError("policy.output_subfolder must be one folder name of letters, digits, '_' or '-'")
    return OperatorConfig(users=users, proxy=proxy, allowed_nodes=frozenset(allowed), output_subfolder=sub,
                          source=source)


def load_config(path: str | Path) -> OperatorConfig:
    """Reads and checks the configuration file (``.toml`` or ``.json``)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read the operator configuration {path}: {exc.strerror or exc}; check "
                          f"{ENV_VAR}") from None
    try:
        if path.suffix.lower() == ".json":
            raw = json.loads(text)
        elif path.suffix.lower() == ".toml":
            if tomllib is None:
                raise ConfigError(f"{path}: TOML needs Python 3.11 or newer; write the configuration as .json")
            raw = tomllib.loads(text)
        else:
            raise ConfigError(f"{path}: the configuration must be a .toml or .json file")
    except (ValueError, TypeError) as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"{path} is not valid {path.suffix[1:].upper()}: {exc}") from None
    return parse_config(raw, source=str(path))
