"""Adapter file formats (the one place that owns them).

- **native** ``.safetensors`` (what ``training/`` writes): flat keys ``user_proj.proj.weight``,
  ``user_proj.proj.bias``, ``user_proj.norm.weight``, ``user_proj.norm.bias``,
  ``layers.{i}.to_k_user.weight``, ``layers.{i}.to_v_user.weight`` (group 0) and, for
  G > 1 groups, ``layers.{i}.extra_groups.{g-1}.to_k_user.weight`` / ``…to_v_user.weight``;
  metadata ``psa_format=psa-native``, ``psa_format_version``, ``arch``, ``embed_dim``,
  ``cross_attention_dim``, ``user_tokens``, ``user_groups``, ``user_attention``
  (``per-group`` | ``joint``, docs/user-tokens.md), ``layer_names`` (JSON), ``training`` (JSON,
  optional). Version 2 marks per-group files with T > 1 or G > 1, which a version-1 reader
  would evaluate jointly; everything else stays version 1.
- **reference** ``psa_adapter.bin`` (docs/reference-parity.md, "Weight files"): a pickled dict
  ``{"psa_adapter": {"{i}.to_k_user.{g}.weight", "{i}.to_v_user.{g}.weight"}, "user_proj": {...}}``
  (g = 0..G-1, one group in every released file), read with ``torch.load(weights_only=True)``
  so no pickled code can run. Always per-group attention.
- **reference** ``.safetensors``: the same tensors with flat ``psa_adapter.`` / ``user_proj.`` prefixes.

Conversions work on the raw tensors (dtypes kept), so reference → native → reference is bit-exact.
A conversion that would change outputs (a joint multi-token adapter into the reference layout,
whose loaders always use per-group attention) is refused.
"""
from __future__ import annotations

import io
import json
import os
import re
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load as safetensors_load
from safetensors.torch import save as safetensors_bytes

from ..adapter.modules import JOINT, PER_GROUP, USER_ATTENTION_MODES, AdapterConfig, PSAAdapter, default_user_attention
from ..adapter.layer_map import architecture, architecture_for_layer_count

NATIVE_FORMAT = "psa-native"
NATIVE_VERSION = "1"  # T = 1 or joint: what every version-1 reader computes correctly
NATIVE_VERSION_PER_GROUP = "2"  # per-group with T > 1 or G > 1 (docs/user-tokens.md)
NATIVE_VERSIONS = (NATIVE_VERSION, NATIVE_VERSION_PER_GROUP)
_PROJ_KEYS = ("proj.weight", "proj.bias", "norm.weight", "norm.bias")
_REFERENCE_KEY = re.compile(r"(\d+)\.(to_k_user|to_v_user)\.(\d+)\.weight")
_KINDS = ("to_k_user", "to_v_user")


class AdapterFormatError(ValueError):
    """An adapter file is not in a format this pack reads, or is inconsistent."""


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file in the same folder and ``os.replace``.

    A crash or a full disk leaves the previous file (or none) — never a truncated one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# -- reading -------------------------------------------------------------------------------
_FIX = ("use the adapter file as published (psa_adapter.bin or its .safetensors variant) or one written by "
        "this pack's trainer or converter")


def _from_reference(groups: dict, source: str) -> tuple[dict, dict]:
    if set(groups) != {"psa_adapter", "user_proj"}:
        found = sorted(str(g)[:40] for g in groups)[:8]
        raise AdapterFormatError(f"{source}: expected groups 'psa_adapter' and 'user_proj', found {found}; {_FIX}")
    for name, group in groups.items():
        if not isinstance(group, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                                  for k, v in group.items()):
            raise AdapterFormatError(f"{source}: '{name}' must map names to tensors; {_FIX}")
    tensors = {}
    for k in _PROJ_KEYS:
        if k not in groups["user_proj"]:
            raise AdapterFormatError(f"{source}: user_proj.{k} is missing")
        tensors[f"user_proj.{k}"] = groups["user_proj"][k]
    parsed = {}
    for key in groups["psa_adapter"]:
        match = _REFERENCE_KEY.fullmatch(key)
        if match is None:
            raise AdapterFormatError(f"{source}: unexpected key psa_adapter.{key} (expected "
                                     "'{layer}.to_k_user.{group}.weight' / '{layer}.to_v_user.{group}.weight')")
        parsed[(int(match[1]), match[2], int(match[3]))] = groups["psa_adapter"][key]
    layer_ids = sorted({i for i, _, _ in parsed})
    if layer_ids != list(range(len(layer_ids))):
        raise AdapterFormatError(f"{source}: adapter layer indices are not 0..{len(layer_ids) - 1}")
    group_ids = sorted({g for _, _, g in parsed})
    n_groups = len(group_ids)
    if group_ids != list(range(n_groups)):
        raise AdapterFormatError(f"{source}: user key/value group indices are {group_ids}, not 0..{n_groups - 1}")
    for i in layer_ids:
        for g in group_ids:
            for kind in _KINDS:
                if (i, kind, g) not in parsed:
                    raise AdapterFormatError(f"{source}: psa_adapter.{i}.{kind}.{g}.weight is missing (the file has "
                                             f"{n_groups} groups; every layer needs to_k_user and to_v_user for each)")
                tensors[canonical_layer_key(i, kind, g)] = parsed[(i, kind, g)]
    try:
        arch = architecture_for_layer_count(len(layer_ids))
    except ValueError as exc:
        raise AdapterFormatError(f"{source}: {exc}; {_FIX}") from None
    return tensors, {"arch": arch.name, "user_attention": PER_GROUP}


def canonical_layer_key(layer: int, kind: str, group: int) -> str:
    """The native / :class:`PSAAdapter` name of layer ``layer``'s group ``group`` projection."""
    if group == 0:
        return f"layers.{layer}.{kind}.weight"
    return f"layers.{layer}.extra_groups.{group - 1}.{kind}.weight"


def _layer_key_parts(key: str) -> tuple[int, str, int]:
    """Inverse of :func:`canonical_layer_key`: (layer, kind, group)."""
    parts = key.split(".")
    if len(parts) == 4:
        return int(parts[1]), parts[2], 0
    if len(parts) == 6 and parts[2] == "extra_groups":
        return int(parts[1]), parts[4], int(parts[3]) + 1
    raise AdapterFormatError(f"unexpected adapter tensor name {key!r}")


def _split_prefixed(flat: dict[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    groups: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in flat.items():
        head, _, rest = key.partition(".")
        groups.setdefault(head, {})[rest] = value
    return groups


def _safetensors_metadata(data: bytes, source: str) -> dict:
    """The ``__metadata__`` of a safetensors file's bytes (8-byte little-endian header length, JSON)."""
    try:
        size = int.from_bytes(data[:8], "little")
        header = json.loads(data[8:8 + size])
    except (ValueError, UnicodeDecodeError) as exc:
        raise AdapterFormatError(f"{source}: not a readable .safetensors file (bad header: {_first_line(exc)}); the "
                                 f"file is damaged or incomplete — download or convert it again ({_FIX})") from None
    return dict(header.get("__metadata__") or {}) if isinstance(header, dict) else {}


def read_adapter_tensors(path: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """Canonical (native-named) tensors and metadata of any supported adapter file."""
    path = Path(path)
    source = path.name
    if path.exists() and not path.is_file():  # a FIFO or device would block or never end
        raise AdapterFormatError(f"{source}: not a regular file; put the adapter file itself into "
                                 "models/psa_adapters")
    if not path.is_file():
        raise FileNotFoundError(f"PSA adapter file not found: {path}")
    if path.suffix == ".safetensors":
        # One sequential read into owned tensors: ~3x faster than mapping the file and copying
        # each tensor out of the map (docs/benchmarks.md, adapter load), and the adapter never
        # depends on the file staying unchanged.
        try:
            data = path.read_bytes()
            meta = _safetensors_metadata(data, source)
            flat = safetensors_load(data)
        except AdapterFormatError:
            raise
        except Exception as exc:  # noqa: BLE001 - safetensors' own error type, OSError, and others
            raise AdapterFormatError(f"{source}: not a readable .safetensors file ({_first_line(exc)}); the file "
                                     f"is damaged or incomplete — download or convert it again ({_FIX})") from None
        if meta.get("psa_format") == NATIVE_FORMAT:
            if meta.get("psa_format_version") not in NATIVE_VERSIONS:
                raise AdapterFormatError(f"{source}: native format version {meta.get('psa_format_version')} "
                                         f"is not supported (this pack reads {', '.join(NATIVE_VERSIONS)}); "
                                         "update the pack")
            return flat, meta
        try:
            return _from_reference(_split_prefixed(flat), source)
        except AdapterFormatError as exc:
            raise AdapterFormatError(f"{exc} (not a native PSA file either: no psa_format metadata)") from None
    if path.suffix in (".bin", ".pt", ".pth"):
        try:
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - the restricted unpickler refuses code and unknown types
            # torch's own message suggests retrying with weights_only=False, i.e. running the file's
            # code: that advice must not reach the user (docs/security.md, "Errors").
            raise AdapterFormatError(f"{source}: not a plain tensor pickle ({exc.__class__.__name__}); refusing to "
                                     "load it, since it may contain code or is damaged. Get the published "
                                     "psa_adapter.bin again, or its .safetensors variant") from None
        if not isinstance(obj, dict):
            raise AdapterFormatError(f"{source}: expected a dict, found {type(obj).__name__}")
        return _from_reference(obj, source)
    raise AdapterFormatError(f"{source}: unknown adapter file type {path.suffix!r} (use .safetensors or .bin)")


def user_semantics(tensors: dict[str, torch.Tensor], meta: dict) -> tuple[int, int, str]:
    """(T user tokens, G groups per layer, user attention mode) of an adapter's tensors + metadata.

    T comes from the projection's shape, G from the layer keys, the mode from ``meta``
    (``user_attention``; absent → :func:`default_user_attention`). A file whose G groups cannot
    each be given a token (G > T), or that mixes group counts, is refused (docs/user-tokens.md).
    """
    for k in _PROJ_KEYS:
        if f"user_proj.{k}" not in tensors:
            raise AdapterFormatError(f"user_proj.{k} is missing")
    proj = tensors["user_proj.proj.weight"]
    c = int(tensors["user_proj.norm.weight"].shape[0])
    if c < 1 or proj.shape[0] % c:
        raise AdapterFormatError(f"user_proj.proj has {proj.shape[0]} outputs, not a multiple of the token width {c}")
    tokens = int(proj.shape[0]) // c
    groups_per_layer: dict[int, set[int]] = {}
    for key in tensors:
        if key.startswith("layers."):
            layer, _, group = _layer_key_parts(key)
            groups_per_layer.setdefault(layer, set()).add(group)
    counts = sorted({len(g) for g in groups_per_layer.values()})
    if len(counts) > 1:
        raise AdapterFormatError(f"layers have different numbers of user key/value groups ({counts}); "
                                 "the file is inconsistent")
    n_groups = counts[0] if counts else 1
    for name, found in (("user_tokens", tokens), ("user_groups", n_groups)):
        if name in meta and str(meta[name]) != str(found):
            raise AdapterFormatError(f"metadata says {name}={meta[name]} but the tensors have {found}")
    attention = meta.get("user_attention") or default_user_attention(tokens)
    if attention not in USER_ATTENTION_MODES:
        raise AdapterFormatError(f"user_attention {attention!r} is not one of {USER_ATTENTION_MODES}")
    if attention == JOINT and n_groups != 1:
        raise AdapterFormatError(f"joint user attention needs one key/value group per layer, the file has {n_groups}")
    if n_groups > tokens:
        raise AdapterFormatError(
            f"the file has {n_groups} user key/value groups per layer but its projection makes {tokens} user "
            f"token(s): group g attends to token g alone, so groups {tokens}..{n_groups - 1} have no token and "
            "their weights would be ignored; this file does not match its projection (docs/user-tokens.md)")
    return tokens, n_groups, attention


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{exc.__class__.__name__}: {text[0][:160]}" if text else exc.__class__.__name__


def config_from_tensors(tensors: dict[str, torch.Tensor], meta: dict) -> AdapterConfig:
    """Shapes (and the architecture and user attention named in ``meta``) → :class:`AdapterConfig`, checked."""
    arch = architecture(meta["arch"])
    tokens, n_groups, attention = user_semantics(tensors, meta)
    n_layers = len({k.split(".")[1] for k in tensors if k.startswith("layers.")})
    if n_layers != len(arch.sites):
        raise AdapterFormatError(f"{arch.name} adapters have {len(arch.sites)} layers, file has {n_layers}")
    proj = tensors["user_proj.proj.weight"]
    c = int(tensors["user_proj.norm.weight"].shape[0])
    dims = tuple(int(tensors[f"layers.{i}.to_v_user.weight"].shape[0]) for i in range(n_layers))
    config = AdapterConfig(arch=arch.name, layer_dims=dims, embed_dim=int(proj.shape[1]), cross_attention_dim=c,
                           user_tokens=tokens, user_groups=n_groups, user_attention=attention)
    if c != arch.cross_attention_dim:
        raise AdapterFormatError(f"token width {c} does not match {arch.name}'s text width {arch.cross_attention_dim}")
    return config


def load_adapter(path: str | Path, dtype: torch.dtype = torch.float32) -> PSAAdapter:
    """Any supported adapter file → a :class:`PSAAdapter` (CPU, ``dtype``, eval mode).

    Every problem with the file's content is an :class:`AdapterFormatError` naming the file.
    """
    tensors, meta = read_adapter_tensors(path)
    source = Path(path).name
    broken = sorted(k for k, v in tensors.items() if v.is_floating_point() and not torch.isfinite(v).all())
    if broken:
        raise AdapterFormatError(f"{source}: tensors {broken[:4]} contain NaN or Inf values; the adapter "
                                 "file is damaged or its training diverged — re-export or retrain it")
    try:
        config = config_from_tensors(tensors, meta)
        # Built on the meta device and handed the file's (owned) tensors: a normal build would first
        # random-initialise every layer only to overwrite it, which was half of the load time
        # (docs/benchmarks.md, adapter load).
        with torch.device("meta"):
            adapter = PSAAdapter(config)
        adapter.load_state_dict({k: v.to(dtype) for k, v in tensors.items()}, strict=True, assign=True)
    except AdapterFormatError as exc:
        message = str(exc)
        raise AdapterFormatError(message if message.startswith(source) else f"{source}: {message}") from None
    except (KeyError, IndexError, TypeError, ValueError, RuntimeError) as exc:
        raise AdapterFormatError(f"{source}: inconsistent adapter tensors ({_first_line(exc)}); {_FIX}") from None
    return adapter.eval().requires_grad_(False)


# -- writing -------------------------------------------------------------------------------
def native_metadata(config: AdapterConfig, training: dict | None = None) -> dict[str, str]:
    arch = config.architecture
    needs_v2 = config.user_attention == PER_GROUP and (config.user_tokens > 1 or config.user_groups > 1)
    meta = {
        "psa_format": NATIVE_FORMAT, "psa_format_version": NATIVE_VERSION_PER_GROUP if needs_v2 else NATIVE_VERSION,
        "arch": config.arch, "embed_dim": str(config.embed_dim), "cross_attention_dim": str(config.cross_attention_dim),
        "user_tokens": str(config.user_tokens), "user_groups": str(config.user_groups),
        "user_attention": config.user_attention, "layer_names": json.dumps([str(s) for s in arch.sites]),
    }
    if training:
        meta["training"] = json.dumps(training, sort_keys=True)
    return meta


def save_native(adapter_or_tensors, path: str | Path, meta: dict | None = None, training: dict | None = None) -> None:
    """Write the native format atomically. Accepts a :class:`PSAAdapter` or canonical tensors + meta."""
    if isinstance(adapter_or_tensors, PSAAdapter):
        tensors = adapter_or_tensors.state_dict()
        meta = native_metadata(adapter_or_tensors.config, training)
    else:
        tensors = adapter_or_tensors
        meta = native_metadata(config_from_tensors(tensors, meta or {}), training)
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    atomic_write_bytes(Path(path), safetensors_bytes(tensors, metadata=meta))


def _to_reference_groups(adapter_or_tensors, meta: dict | None) -> dict[str, dict[str, torch.Tensor]]:
    """Reference-layout groups; refuses adapters whose outputs the reference would compute differently.

    The reference always uses per-group attention (docs/user-tokens.md); a joint adapter with
    T > 1 would silently give other images there. ``meta`` names the mode of bare tensors
    (absent → :func:`default_user_attention`, i.e. joint for T > 1, as the trainer wrote them).
    """
    if isinstance(adapter_or_tensors, PSAAdapter):
        tensors = adapter_or_tensors.state_dict()
        meta = {"user_attention": adapter_or_tensors.config.user_attention}
    else:
        tensors = adapter_or_tensors
    tokens, _, attention = user_semantics(tensors, meta or {})
    if attention != PER_GROUP and tokens > 1:
        raise AdapterFormatError(
            f"this adapter uses joint attention over {tokens} user tokens; the reference layout is always read "
            "with per-group attention (one token per key/value group), which would change its outputs. Keep it "
            "in the native format (docs/user-tokens.md)")
    groups: dict[str, dict[str, torch.Tensor]] = {"psa_adapter": {}, "user_proj": {}}
    for key, value in tensors.items():
        if key.startswith("user_proj."):
            groups["user_proj"][key[len("user_proj."):]] = value.detach().cpu().contiguous()
        else:
            i, kind, g = _layer_key_parts(key)
            groups["psa_adapter"][f"{i}.{kind}.{g}.weight"] = value.detach().cpu().contiguous()
    return groups


def save_reference_bin(adapter_or_tensors, path: str | Path, meta: dict | None = None) -> None:
    """The reference ``psa_adapter.bin`` layout (a plain tensor pickle), written atomically.

    Accepts a :class:`PSAAdapter` or canonical tensors + their metadata; refuses joint multi-token
    adapters (see :func:`_to_reference_groups`)."""
    buf = io.BytesIO()
    torch.save(_to_reference_groups(adapter_or_tensors, meta), buf)
    atomic_write_bytes(Path(path), buf.getvalue())


def save_reference_safetensors(adapter_or_tensors, path: str | Path, meta: dict | None = None) -> None:
    """The reference ``.safetensors`` variant (flat ``psa_adapter.`` / ``user_proj.`` keys)."""
    groups = _to_reference_groups(adapter_or_tensors, meta)
    flat = {f"{g}.{k}": v for g, items in groups.items() for k, v in items.items()}
    atomic_write_bytes(Path(path), safetensors_bytes(flat))
