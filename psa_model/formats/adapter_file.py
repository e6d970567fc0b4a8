"""Adapter file formats (the one place that owns them).

- **native** ``.safetensors`` (what ``training/`` writes): flat keys ``user_proj.proj.weight``,
  ``user_proj.proj.bias``, ``user_proj.norm.weight``, ``user_proj.norm.bias``,
  ``layers.{i}.to_k_user.weight``, ``layers.{i}.to_v_user.weight``; metadata
  ``psa_format=psa-native``, ``psa_format_version``, ``arch``, ``embed_dim``,
  ``cross_attention_dim``, ``user_tokens``, ``layer_names`` (JSON), ``training`` (JSON, optional).
- **reference** ``psa_adapter.bin`` (reference §3): a pickled dict
  ``{"psa_adapter": {"{i}.to_k_user.0.weight", "{i}.to_v_user.0.weight"}, "user_proj": {...}}``,
  read with ``torch.load(weights_only=True)`` so no pickled code can run.
- **reference** ``.safetensors``: the same tensors with flat ``psa_adapter.`` / ``user_proj.`` prefixes.

Conversions work on the raw tensors (dtypes kept), so reference → native → reference is bit-exact.
"""
from __future__ import annotations

import io
import json
import os
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load as safetensors_load
from safetensors.torch import save as safetensors_bytes

from ..adapter.modules import AdapterConfig, PSAAdapter
from ..adapter.layer_map import architecture, architecture_for_layer_count

NATIVE_FORMAT = "psa-native"
NATIVE_VERSION = "1"
_PROJ_KEYS = ("proj.weight", "proj.bias", "norm.weight", "norm.bias")


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
def _from_reference(groups: dict[str, dict[str, torch.Tensor]], source: str) -> tuple[dict, dict]:
    if set(groups) != {"psa_adapter", "user_proj"}:
        raise AdapterFormatError(f"{source}: expected groups 'psa_adapter' and 'user_proj', found {sorted(groups)}")
    tensors = {}
    for k in _PROJ_KEYS:
        if k not in groups["user_proj"]:
            raise AdapterFormatError(f"{source}: user_proj.{k} is missing")
        tensors[f"user_proj.{k}"] = groups["user_proj"][k]
    layer_ids = sorted({int(k.split(".")[0]) for k in groups["psa_adapter"]})
    if layer_ids != list(range(len(layer_ids))):
        raise AdapterFormatError(f"{source}: adapter layer indices are not 0..{len(layer_ids) - 1}")
    for i in layer_ids:
        for kind in ("to_k_user", "to_v_user"):
            key = f"{i}.{kind}.0.weight"
            if key not in groups["psa_adapter"]:
                raise AdapterFormatError(f"{source}: psa_adapter.{key} is missing")
            tensors[f"layers.{i}.{kind}.weight"] = groups["psa_adapter"][key]
    arch = architecture_for_layer_count(len(layer_ids))
    return tensors, {"arch": arch.name}


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
        raise AdapterFormatError(f"{source}: not a safetensors file ({exc}); re-export or re-download it") from None
    return dict(header.get("__metadata__") or {}) if isinstance(header, dict) else {}


def read_adapter_tensors(path: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """Canonical (native-named) tensors and metadata of any supported adapter file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"PSA adapter file not found: {path}")
    source = path.name
    if path.suffix == ".safetensors":
        # One sequential read into owned tensors: ~3x faster than mapping the file and copying
        # each tensor out of the map (docs/benchmarks.md, adapter load), and the adapter never
        # depends on the file staying unchanged.
        data = path.read_bytes()
        meta = _safetensors_metadata(data, source)
        flat = safetensors_load(data)
        if meta.get("psa_format") == NATIVE_FORMAT:
            if meta.get("psa_format_version") != NATIVE_VERSION:
                raise AdapterFormatError(f"{source}: native format version {meta.get('psa_format_version')} "
                                         f"is not supported (this pack reads {NATIVE_VERSION}); update the pack")
            return flat, meta
        try:
            return _from_reference(_split_prefixed(flat), source)
        except AdapterFormatError as exc:
            raise AdapterFormatError(f"{exc} (not a native PSA file either: no psa_format metadata)") from None
    if path.suffix in (".bin", ".pt", ".pth"):
        try:
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as exc:  # the restricted unpickler refuses code and unknown types
            raise AdapterFormatError(f"{source}: not a plain tensor pickle ({exc.__class__.__name__}: {exc}); "
                                     "refusing to load it") from None
        if not isinstance(obj, dict):
            raise AdapterFormatError(f"{source}: expected a dict, found {type(obj).__name__}")
        return _from_reference(obj, source)
    raise AdapterFormatError(f"{source}: unknown adapter file type {path.suffix!r} (use .safetensors or .bin)")


def config_from_tensors(tensors: dict[str, torch.Tensor], meta: dict) -> AdapterConfig:
    """Shapes (and the architecture named in ``meta``) → :class:`AdapterConfig`, checked."""
    arch = architecture(meta["arch"])
    n_layers = len({k.split(".")[1] for k in tensors if k.startswith("layers.")})
    if n_layers != len(arch.sites):
        raise AdapterFormatError(f"{arch.name} adapters have {len(arch.sites)} layers, file has {n_layers}")
    proj = tensors["user_proj.proj.weight"]
    c = int(tensors["user_proj.norm.weight"].shape[0])
    if proj.shape[0] % c:
        raise AdapterFormatError(f"user_proj.proj has {proj.shape[0]} outputs, not a multiple of the token width {c}")
    dims = tuple(int(tensors[f"layers.{i}.to_v_user.weight"].shape[0]) for i in range(n_layers))
    config = AdapterConfig(arch=arch.name, layer_dims=dims, embed_dim=int(proj.shape[1]),
                           cross_attention_dim=c, user_tokens=int(proj.shape[0]) // c)
    if c != arch.cross_attention_dim:
        raise AdapterFormatError(f"token width {c} does not match {arch.name}'s text width {arch.cross_attention_dim}")
    return config


def load_adapter(path: str | Path, dtype: torch.dtype = torch.float32) -> PSAAdapter:
    """Any supported adapter file → a :class:`PSAAdapter` (CPU, ``dtype``, eval mode)."""
    tensors, meta = read_adapter_tensors(path)
    config = config_from_tensors(tensors, meta)
    # Built on the meta device and handed the file's (owned) tensors: a normal build would first
    # random-initialise every layer only to overwrite it, which was half of the load time
    # (docs/benchmarks.md, adapter load).
    with torch.device("meta"):
        adapter = PSAAdapter(config)
    adapter.load_state_dict({k: v.to(dtype) for k, v in tensors.items()}, strict=True, assign=True)
    return adapter.eval().requires_grad_(False)


# -- writing -------------------------------------------------------------------------------
def native_metadata(config: AdapterConfig, training: dict | None = None) -> dict[str, str]:
    arch = config.architecture
    meta = {
        "psa_format": NATIVE_FORMAT, "psa_format_version": NATIVE_VERSION, "arch": config.arch,
        "embed_dim": str(config.embed_dim), "cross_attention_dim": str(config.cross_attention_dim),
        "user_tokens": str(config.user_tokens), "layer_names": json.dumps([str(s) for s in arch.sites]),
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


def _to_reference_groups(tensors: dict[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    groups: dict[str, dict[str, torch.Tensor]] = {"psa_adapter": {}, "user_proj": {}}
    for key, value in tensors.items():
        if key.startswith("user_proj."):
            groups["user_proj"][key[len("user_proj."):]] = value.detach().cpu().contiguous()
        else:
            _, i, kind, _ = key.split(".")
            groups["psa_adapter"][f"{i}.{kind}.0.weight"] = value.detach().cpu().contiguous()
    return groups


def save_reference_bin(tensors: dict[str, torch.Tensor], path: str | Path) -> None:
    """The reference ``psa_adapter.bin`` layout (a plain tensor pickle), written atomically."""
    buf = io.BytesIO()
    torch.save(_to_reference_groups(tensors), buf)
    atomic_write_bytes(Path(path), buf.getvalue())


def save_reference_safetensors(tensors: dict[str, torch.Tensor], path: str | Path) -> None:
    """The reference ``.safetensors`` variant (flat ``psa_adapter.`` / ``user_proj.`` keys)."""
    groups = _to_reference_groups(tensors)
    flat = {f"{g}.{k}": v for g, items in groups.items() for k, v in items.items()}
    atomic_write_bytes(Path(path), safetensors_bytes(flat))
