"""User profiles: one or more user embeddings plus non-sensitive labels (docs/reference-parity.md).

A :class:`PSAProfile` is what flows between the nodes as ``PSA_PROFILE``. Sources handled here:
embedding files (``.npy`` as published — ``(E,)`` or ``(1, 1, E)`` — or ``.safetensors``), profile
``.json`` files that point at an embedding, Sage users by ``User_ID`` from a users table plus an
embeddings folder, and the published operating points ("levels") as presets.
"""
from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

CATEGORIES = ("Hate", "Harassment", "Violence", "Self-Harm", "Sexuality", "Shocking", "Propaganda")

# docs/reference-parity.md, "Operating points": the published operating points, increasingly restrictive.
LEVEL_PRESETS: dict[str, str] = {
    "level 0 (Sage user 0001001)": "0001001",
    "level 1 (Sage user 0000797)": "0000797",
    "level 2 (Sage user 0000697)": "0000697",
    "level 3 (Sage user 0000002)": "0000002",
    "level 4 (Sage user 0000742)": "0000742",
    "level 5 (Sage user 0000501)": "0000501",
}
SAGE_USERS_FILE = "sage_users.csv"
SAGE_EMBEDDINGS_DIR = "sage_embeddings"


class ProfileError(ValueError):
    """A profile cannot be loaded or combined as asked."""


@dataclass(frozen=True)
class ProfileLabel:
    """What may be shown about one profile (never the raw attributes)."""

    name: str
    forbidden: tuple[str, ...] | None = None  # None: not known
    allowed: tuple[str, ...] | None = None
    source: str = ""


@dataclass(frozen=True)
class PSAProfile:
    """P user embeddings ``[P, E]`` (float32, CPU) with one label each."""

    embeddings: torch.Tensor
    labels: tuple[ProfileLabel, ...] = field(default=())

    def __post_init__(self) -> None:
        e = self.embeddings
        if e.ndim != 2 or e.shape[0] < 1:
            raise ProfileError(f"profile embeddings must be [profiles, dim], got shape {tuple(e.shape)}")
        if not torch.isfinite(e).all():
            raise ProfileError(f"profile {self.names()} contains NaN or Inf values; re-create its embedding file")
        if len(self.labels) != e.shape[0]:
            raise ProfileError(f"{e.shape[0]} embeddings but {len(self.labels)} labels")

    @property
    def count(self) -> int:
        return int(self.embeddings.shape[0])

    @property
    def dim(self) -> int:
        return int(self.embeddings.shape[1])

    def names(self) -> list[str]:
        return [label.name for label in self.labels]

    def describe(self) -> str:
        """One line per profile: name, forbidden and allowed categories (when known)."""
        lines = []
        for label in self.labels:
            forbidden = ", ".join(label.forbidden) if label.forbidden is not None else "unknown"
            allowed = ", ".join(label.allowed) if label.allowed is not None else "unknown"
            lines.append(f"{label.name}: forbidden [{forbidden}]; allowed [{allowed}]")
        return "\n".join(lines)


def combine(profiles: list[PSAProfile]) -> PSAProfile:
    """Concatenate profiles into one batch (profile i → latent i when sampled)."""
    if not profiles:
        raise ProfileError("no profiles to combine")
    dims = {p.dim for p in profiles}
    if len(dims) > 1:
        raise ProfileError(f"profiles have different embedding sizes {sorted(dims)}; they come from different encoders")
    return PSAProfile(torch.cat([p.embeddings for p in profiles]), tuple(l for p in profiles for l in p.labels))


def _as_vector(array: np.ndarray, source: str) -> torch.Tensor:
    squeezed = np.asarray(array, dtype=np.float32).reshape(-1) if array.ndim and array.size == array.shape[-1] else None
    if squeezed is None:
        raise ProfileError(f"{source}: expected one embedding of shape (E,) or (1, 1, E), got {array.shape}")
    return torch.from_numpy(squeezed.copy())


def load_embedding_file(path: Path) -> torch.Tensor:
    """An embedding file → ``[E]`` float32. ``.npy`` must not contain pickled objects."""
    path = Path(path)
    if not path.is_file():
        raise ProfileError(f"embedding file not found: {path}")
    if path.suffix == ".npy":
        try:
            array = np.load(path, allow_pickle=False)
        except ValueError as exc:
            raise ProfileError(f"{path.name}: not a plain numeric .npy file ({exc})") from None
        return _as_vector(array, path.name)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        tensors = load_file(str(path))
        if len(tensors) != 1:
            raise ProfileError(f"{path.name}: expected one tensor, found {sorted(tensors)}")
        return _as_vector(next(iter(tensors.values())).float().numpy(), path.name)
    raise ProfileError(f"{path.name}: unsupported embedding file type (use .npy or .safetensors)")


def _categories(values, source: str) -> tuple[str, ...] | None:
    if values is None:
        return None
    unknown = [v for v in values if v not in CATEGORIES]
    if unknown:
        raise ProfileError(f"{source}: unknown categories {unknown}; known: {list(CATEGORIES)}")
    return tuple(sorted(values, key=CATEGORIES.index))


def parse_category_list(text: str) -> list[str]:
    """Sage's ``"['Hate', 'Violence']"`` cells → ``['Hate', 'Violence']``."""
    text = text.strip()
    if text in ("", "[]"):
        return []
    return [part.strip().strip("'\"") for part in text.strip("[]").split(",") if part.strip()]


def load_profile_file(path: Path) -> PSAProfile:
    """A profile from an embedding file or a ``.json`` that points at one.

    JSON keys: ``embedding`` (path, relative to the JSON file), optional ``name``,
    ``forbidden``, ``allowed`` (category lists).
    """
    path = Path(path)
    if path.suffix != ".json":
        return PSAProfile(load_embedding_file(path)[None], (ProfileLabel(path.stem, source=path.name),))
    try:
        spec = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ProfileError(f"{path.name}: cannot read profile JSON ({exc})") from None
    if "embedding" not in spec:
        raise ProfileError(f"{path.name}: no 'embedding' key; attribute-only profiles need an encoder "
                           "(PSA Encode Profile or PSA Nearest Sage User)")
    embedding = load_embedding_file(path.parent / spec["embedding"])
    label = ProfileLabel(spec.get("name", path.stem), _categories(spec.get("forbidden"), path.name),
                         _categories(spec.get("allowed"), path.name), path.name)
    return PSAProfile(embedding[None], (label,))


def normalise_user_id(user_id: str | int) -> str:
    """Sage ``User_ID``: 1-based row number, zero-padded to 7 digits."""
    text = str(user_id).strip()
    if not text.isdigit() or int(text) < 1:
        raise ProfileError(f"Sage User_ID must be a positive number, got {user_id!r}")
    return f"{int(text):07d}"


def read_sage_users(table: Path) -> dict[str, dict[str, str]]:
    """``sage_users.csv`` → {User_ID: row}; User_ID is the 1-based row number when not a column."""
    with open(table, newline="") as fh:
        rows = list(csv.DictReader(fh))
    return {normalise_user_id(r.get("User_ID") or i + 1): r for i, r in enumerate(rows)}


def load_sage_user(folder: Path, user_id: str | int, name: str | None = None) -> PSAProfile:
    """Sage user ``user_id`` from ``folder/sage_embeddings/{id}.npy`` (+ labels from the users table)."""
    uid = normalise_user_id(user_id)
    folder = Path(folder)
    emb_path = folder / SAGE_EMBEDDINGS_DIR / f"{uid}.npy"
    if not emb_path.is_file():
        raise ProfileError(f"no embedding for Sage user {uid}: put {uid}.npy into {folder / SAGE_EMBEDDINGS_DIR}")
    forbidden = allowed = None
    table = folder / SAGE_USERS_FILE
    if table.is_file():
        row = read_sage_users(table).get(uid)
        if row is not None:
            forbidden = _categories(parse_category_list(row["Banned_Categories"]), SAGE_USERS_FILE)
            allowed = _categories(parse_category_list(row["Allowed_Categories"]), SAGE_USERS_FILE)
    label = ProfileLabel(name or f"Sage user {uid}", forbidden, allowed, f"{SAGE_EMBEDDINGS_DIR}/{uid}.npy")
    return PSAProfile(load_embedding_file(emb_path)[None], (label,))


def load_preset(folder: Path, preset: str) -> PSAProfile:
    """A published operating point ("level") resolved through the Sage folder."""
    if preset not in LEVEL_PRESETS:
        raise ProfileError(f"unknown PSA preset {preset!r}; choose one of {list(LEVEL_PRESETS)}")
    return load_sage_user(folder, LEVEL_PRESETS[preset], name=preset)
