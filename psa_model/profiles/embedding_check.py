"""Is an embedding like the ones the published adapters were trained on? (docs/profiles.md, "Checking an embedding")

The published Sage embeddings (size 3584, Qwen2.5-7B-Instruct, mean pooling in bfloat16) have an
L2 norm of about 138 (137.9 and 139.0 for the two published files; element std ≈ 2.3). A summed
embedding is roughly token-count times larger (tens of thousands), a different model or template
moves it too. The range below is deliberately wide — half to twice the published norm — so it
flags a wrong recipe, not ordinary variation between users. It is defined only for the published
size: for other sizes there is no published reference and only the norm is reported.
"""
from __future__ import annotations

from pathlib import Path

import torch

from ..adapter.modules import REFERENCE_EMBED_DIM
from .embedding_cache import model_identity, template_hash
from .profile import PSAProfile
from .recipe import EncodingRecipe, compute_dtype

PUBLISHED_NORM = 138.45  # mean of the two published files' norms (137.93, 138.97)
PUBLISHED_NORM_RANGE = (PUBLISHED_NORM / 2, PUBLISHED_NORM * 2)


def norm_warning(norm: float, dim: int) -> str | None:
    """A sentence when an embedding of size ``dim`` with this norm is off the published range, else None."""
    if dim != REFERENCE_EMBED_DIM:
        return None
    low, high = PUBLISHED_NORM_RANGE
    if low <= norm <= high:
        return None
    ratio = norm / PUBLISHED_NORM
    hint = ("a summed embedding (pipeline variant) is about token-count times larger"
            if ratio > 1 else "a different model, template or pooling gives other norms")
    return (f"WARNING: norm {norm:.1f} is {ratio:.3g}x the published embeddings' ≈{PUBLISHED_NORM:.0f} "
            f"(expected {low:.0f}–{high:.0f}); published adapters were trained on mean-pooled embeddings — {hint}")


def norm_report(embeddings: torch.Tensor, names: list[str] | None = None) -> str:
    """One line per embedding ``[P, E]``: its norm and, when off the published range, a warning."""
    embeddings = embeddings.reshape(-1, embeddings.shape[-1]).float()
    names = names or [f"embedding {i + 1}" for i in range(embeddings.shape[0])]
    dim = int(embeddings.shape[-1])
    lines = []
    for name, vector in zip(names, embeddings):
        norm = float(vector.norm())
        if dim == REFERENCE_EMBED_DIM:
            low, high = PUBLISHED_NORM_RANGE
            reference = f"published ≈{PUBLISHED_NORM:.0f}, range {low:.0f}–{high:.0f}"
        else:
            reference = f"no published reference for size {dim}"
        line = f"{name}: norm {norm:.1f}, std {float(vector.std()):.3g} ({reference})"
        warning = norm_warning(norm, dim)
        lines.append(line if warning is None else f"{line}\n  {warning}")
    return "\n".join(lines)


def describe_with_norms(profile: PSAProfile) -> str:
    """A profile's labels plus the norm report (the summary of the profile nodes)."""
    return f"{profile.describe()}\n{norm_report(profile.embeddings, profile.names())}"


def encoding_summary(profile: PSAProfile, folder: Path, template: str, recipe: EncodingRecipe, note: str = "") -> str:
    """PSA Encode Profile (LLM)'s summary: labels, recipe, model identity, template hash, norms, note.

    Everything that decides the embedding (and its cache key) is listed, so two summaries that
    agree describe embeddings made the same way (docs/profiles.md).
    """
    folder = Path(folder)
    lines = [profile.describe(),
             f"recipe: {recipe.describe(compute_dtype(folder, recipe))}",
             f"model: {folder.name} (identity {model_identity(folder)[:12]}); "
             f"template sha256 {template_hash(template)[:12]}",
             norm_report(profile.embeddings, profile.names())]
    if note:
        lines.append(f"({note})")
    return "\n".join(lines)
