"""Disk cache of LLM profile embeddings (README: Profiles from attributes).

Key = sha256 of (model identity, template hash, encoding recipe, canonical profile JSON): an
embedding is never reused across models, templates or recipes (pooling, compute dtype, category
notation; docs/profiles.md). Model identity is the
folder name plus hashes of the small files that decide the result (``config.json``, tokenizer
config / chat template) and the names and sizes of the weight files — computed without loading
the model. Files are ``<key>.safetensors`` holding one tensor ``embedding`` ``[E]`` float32;
the metadata names the model folder, template hash and recipe but never the profile's attributes.
"""
from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Callable, Sequence

import torch
from safetensors.torch import load_file, save_file

from ..scratch import claim, is_marked, remove
from .recipe import PUBLISHED_RECIPE, EncodingRecipe, compute_dtype
from .schema import StructuredProfile

_IDENTITY_FILES = ("config.json", "tokenizer_config.json", "chat_template.jinja", "chat_template.json",
                   "tokenizer.json", "vocab.json", "merges.txt")
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
_ENTRY = re.compile(r"[0-9a-f]{64}\.safetensors")


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def model_identity(folder: Path) -> str:
    folder = Path(folder)
    parts = [f"name={folder.name}"]
    for name in _IDENTITY_FILES:
        path = folder / name
        if path.is_file():
            parts.append(f"{name}={_sha(path.read_bytes())}")
    for path in sorted(folder.iterdir()):
        if path.suffix in _WEIGHT_SUFFIXES and path.is_file():
            parts.append(f"{path.name}:{path.stat().st_size}")
    return _sha("\n".join(parts).encode())


def template_hash(template: str) -> str:
    return _sha(template.encode("utf-8"))


def recipe_identity(folder: Path, recipe: EncodingRecipe) -> str:
    """The recipe with the dtype it computes in for this model folder (part of the cache key)."""
    return recipe.identity(compute_dtype(folder, recipe))


class EmbeddingCache:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    @staticmethod
    def key(model_id: str, template_id: str, profile: StructuredProfile, recipe_id: str = "") -> str:
        """``recipe_id``: :meth:`EncodingRecipe.identity` (see :func:`recipe_identity`)."""
        return _sha(f"{model_id}\n{template_id}\nrecipe:{recipe_id}\n{profile.canonical_json()}".encode("utf-8"))

    def path(self, key: str) -> Path:
        return self.root / f"{key}.safetensors"

    def get(self, key: str) -> torch.Tensor | None:
        path = self.path(key)
        if not path.is_file():
            return None
        try:
            tensor = load_file(str(path))["embedding"]
        except Exception:  # noqa: BLE001 - a damaged cache entry is recomputed, not fatal
            return None
        if tensor.ndim != 1 or not tensor.dtype.is_floating_point or not torch.isfinite(tensor).all():
            return None  # not something this cache wrote: recompute (and overwrite) it
        return tensor.float()

    def _entries(self) -> list[Path]:
        """The files this cache wrote: ``<64 hex digits>.safetensors`` (nothing else is ever deleted)."""
        return [p for p in self.root.glob("*.safetensors") if _ENTRY.fullmatch(p.name)]

    def put(self, key: str, embedding: torch.Tensor, metadata: dict[str, str] | None = None) -> None:
        if not self.root.is_dir() or not is_marked(self.root) and all(
                _ENTRY.fullmatch(p.name) for p in self.root.iterdir()):  # new, or written by an older version
            claim(self.root, "the profile embedding cache", adopt=True)
        tmp = self.path(key).with_suffix(".tmp")
        save_file({"embedding": embedding.detach().float().cpu().contiguous()}, str(tmp), metadata=metadata or {})
        os.replace(tmp, self.path(key))

    def clear(self) -> int:
        """Delete every cache entry; returns how many. The folder must carry the pack's marker
        (:mod:`psa_model.scratch`); other files in it are left alone."""
        if not self.root.is_dir():
            return 0
        entries = self._entries()
        for path in entries:
            remove(path, self.root)
        return len(entries)

    def __len__(self) -> int:
        return len(list(self.root.glob("*.safetensors"))) if self.root.is_dir() else 0


def encode_with_cache(folder: Path, template: str, profiles: Sequence[StructuredProfile],
                      cache: EmbeddingCache | None, encode: Callable[[list[StructuredProfile]], torch.Tensor],
                      refresh: bool = False, recipe: EncodingRecipe = PUBLISHED_RECIPE) -> tuple[torch.Tensor, int]:
    """``[P, E]`` for ``profiles``; ``encode`` (which loads the model) runs only on the misses.

    ``recipe`` must be the recipe ``encode`` uses: it is part of the key. Returns the embeddings
    and the number of cache hits.
    """
    results: list[torch.Tensor | None] = [None] * len(profiles)
    keys: list[str] = []
    recipe_id = recipe_identity(folder, recipe)
    if cache is not None:
        model_id, template_id = model_identity(folder), template_hash(template)
        keys = [cache.key(model_id, template_id, p, recipe_id) for p in profiles]
        if not refresh:
            results = [cache.get(k) for k in keys]
    missing = [i for i, r in enumerate(results) if r is None]
    if missing:
        fresh = encode([profiles[i] for i in missing])
        for i, vector in zip(missing, fresh):
            results[i] = vector.float().cpu()
            if cache is not None:
                cache.put(keys[i], results[i], {"model_folder": Path(folder).name,
                                                "template_sha256": template_hash(template), "recipe": recipe_id})
    return torch.stack(results), len(profiles) - len(missing)
