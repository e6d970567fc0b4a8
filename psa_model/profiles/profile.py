"""User profiles: one or more user embeddings plus non-sensitive labels (docs/reference-parity.md).

A :class:`PSAProfile` is what flows between the nodes as ``PSA_PROFILE``. Sources handled here:
embedding files (``.npy`` as published — ``(E,)`` or ``(1, 1, E)`` — or ``.safetensors``), profile
``.json`` files that point at an embedding, Sage users by ``User_ID`` from a users table plus an
embeddings folder, and the published operating points ("levels") as presets.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from safetensors.torch import load_file

from ..confine import PathEscapeError, confined_path
from .boundaries import attribute_forbidden, boundary_warning
from .schema import ATTRIBUTE_KEYS, StructuredProfile, check_attribute_values
from .vocabulary import (
    CATEGORIES,
    SAGE_EMBEDDINGS_DIR,
    SAGE_USERS_FILE,
    ProfileError,
    parse_category_list,
    read_json_file,
    short_repr,
)

# docs/reference-parity.md, "Operating points": the published operating points, increasingly restrictive.
LEVEL_PRESETS: dict[str, str] = {
    "level 0 (Sage user 0001001)": "0001001",
    "level 1 (Sage user 0000797)": "0000797",
    "level 2 (Sage user 0000697)": "0000697",
    "level 3 (Sage user 0000002)": "0000002",
    "level 4 (Sage user 0000742)": "0000742",
    "level 5 (Sage user 0000501)": "0000501",
}
@dataclass(frozen=True)
class ProfileLabel:
    """What may be shown about one profile (never the raw attributes)."""

    name: str
    forbidden: tuple[str, ...] | None = None  # None: not known
    allowed: tuple[str, ...] | None = None
    source: str = ""
    # What the Sage policy gives for the profile's attributes (None: attributes not known); the
    # summary warns when it differs from ``forbidden`` (psa_model/profiles/boundaries.py).
    attribute_forbidden: tuple[str, ...] | None = None


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
        """One line per profile: name, forbidden and allowed categories (when known), and a warning when
        the categories differ from what the Sage policy gives for the profile's attributes."""
        lines = []
        for label in self.labels:
            forbidden = ", ".join(label.forbidden) if label.forbidden is not None else "unknown"
            allowed = ", ".join(label.allowed) if label.allowed is not None else "unknown"
            lines.append(f"{label.name}: forbidden [{forbidden}]; allowed [{allowed}]")
            warning = boundary_warning(label.name, label.forbidden, label.attribute_forbidden)
            if warning:
                lines.append(f"  {warning}")
        return "\n".join(lines)


def combine(profiles: list[PSAProfile]) -> PSAProfile:
    """Concatenate profiles into one batch (profile i → latent i when sampled)."""
    if not profiles:
        raise ProfileError("no profiles to combine")
    dims = {p.dim for p in profiles}
    if len(dims) > 1:
        raise ProfileError(f"profiles have different embedding sizes {sorted(dims)}; they come from different encoders")
    return PSAProfile(torch.cat([p.embeddings for p in profiles]), tuple(label for p in profiles for label in p.labels))


PROFILE_JSON_KEYS = ("embedding", "name", "forbidden", "allowed", "note")
_FIX_EMBEDDING = "re-create it with numpy.save(path, vector) (float32, shape (E,)) or as a one-tensor .safetensors"


def _as_vector(array: np.ndarray, source: str) -> torch.Tensor:
    if array.dtype.kind not in "fiu":
        raise ProfileError(f"{source}: embedding has dtype {array.dtype}, expected numbers; {_FIX_EMBEDDING}")
    if not array.ndim or array.size != array.shape[-1] or array.size == 0:
        raise ProfileError(f"{source}: expected one embedding of shape (E,) or (1, 1, E), got {array.shape}; "
                           f"{_FIX_EMBEDDING}")
    with np.errstate(over="ignore"):  # overflow shows up as Inf and is refused by PSAProfile
        squeezed = np.asarray(array, dtype=np.float32).reshape(-1)
    return torch.from_numpy(squeezed.copy())


def load_embedding_file(path: Path) -> torch.Tensor:
    """An embedding file → ``[E]`` float32. ``.npy`` must not contain pickled objects.

    Every failure is a :class:`ProfileError` naming the file (docs/security.md, "Errors").
    """
    path = Path(path)
    if not path.is_file():
        raise ProfileError(f"embedding file not found: {path.name}; put it into models/psa_profiles")
    if path.suffix == ".npy":
        try:
            array = np.load(path, allow_pickle=False)
        except Exception as exc:  # noqa: BLE001 - numpy raises many types for damaged files
            detail = "it holds pickled objects" if "pickle" in str(exc) else exc.__class__.__name__
            raise ProfileError(f"{path.name}: not a plain numeric .npy file ({detail}); {_FIX_EMBEDDING}") from None
        return _as_vector(array, path.name)
    if path.suffix == ".safetensors":
        try:
            tensors = load_file(str(path))
        except Exception as exc:  # noqa: BLE001 - safetensors raises its own error type and others
            raise ProfileError(f"{path.name}: not a readable .safetensors file ({exc.__class__.__name__}); "
                               f"{_FIX_EMBEDDING}") from None
        if len(tensors) != 1:
            raise ProfileError(f"{path.name}: expected one tensor, found {len(tensors)}; {_FIX_EMBEDDING}")
        tensor = next(iter(tensors.values()))
        if not (tensor.dtype.is_floating_point or tensor.dtype in (torch.int8, torch.int16, torch.int32,
                                                                     torch.int64, torch.uint8)):
            raise ProfileError(f"{path.name}: embedding has dtype {tensor.dtype}, expected numbers; {_FIX_EMBEDDING}")
        return _as_vector(tensor.float().numpy(), path.name)
    raise ProfileError(f"{path.name}: unsupported embedding file type (use .npy or .safetensors)")


def _categories(values, source: str, key: str = "forbidden") -> tuple[str, ...] | None:
    if values is None:
        return None
    if not isinstance(values, (list, tuple)) or not all(isinstance(v, str) for v in values):
        raise ProfileError(f"{source}: '{key}' must be a list of category names such as [\"Hate\", \"Violence\"], "
                           f"got {type(values).__name__} {short_repr(values)}; known: {list(CATEGORIES)}")
    unknown = [v for v in values if v not in CATEGORIES]
    if unknown:
        raise ProfileError(f"{source}: unknown categories {unknown} in '{key}'; known: {list(CATEGORIES)}")
    return tuple(sorted(set(values), key=CATEGORIES.index))


def load_profile_file(path: Path, roots: Sequence[Path] | None = None) -> PSAProfile:
    """A profile from an embedding file or a ``.json`` that points at one.

    JSON keys (strict, nothing else): ``embedding`` (file name relative to the JSON file, which
    must stay inside ``roots`` — default: the JSON file's folder; docs/security.md), optional
    ``name`` (text), ``forbidden``/``allowed`` (lists of category names), ``note`` (text);
    attributes (``age``, ``gender``, …) may be kept beside them and must then be valid, as in an
    attribute-only profile.
    """
    path = Path(path)
    if path.suffix != ".json":
        return PSAProfile(load_embedding_file(path)[None], (ProfileLabel(path.stem, source=path.name),))
    spec = read_json_file(path)
    source = path.name
    if not isinstance(spec, dict):
        raise ProfileError(f"{source}: a profile file must be a JSON object with the keys {list(PROFILE_JSON_KEYS)}, "
                           f"got {type(spec).__name__}")
    unknown = sorted(str(k) for k in spec if k not in PROFILE_JSON_KEYS)
    if "embedding" not in spec:
        raise ProfileError(f"{source}: no 'embedding' key; attribute-only profiles need an encoder "
                           "(PSA Profile Policy → PSA Encode Profile or PSA Nearest Sage User)")
    unknown = [k for k in unknown if k.strip().lower() not in ATTRIBUTE_KEYS]
    if unknown:
        raise ProfileError(f"{source}: unknown keys {unknown}; a profile file with an embedding accepts only "
                           f"{list(PROFILE_JSON_KEYS)} and the attributes {sorted(ATTRIBUTE_KEYS)}")
    check_attribute_values(spec, source)  # attributes beside an embedding follow the same rules
    for key in ("embedding", "name", "note"):
        if key in spec and not isinstance(spec[key], str):
            raise ProfileError(f"{source}: '{key}' must be text, got {type(spec[key]).__name__} {short_repr(spec[key])}")
    forbidden = _categories(spec.get("forbidden"), source, "forbidden")
    allowed = _categories(spec.get("allowed"), source, "allowed")
    try:
        target = confined_path(spec["embedding"], path.parent, roots if roots is not None else [path.parent],
                               "embedding", source)
    except PathEscapeError as exc:
        raise ProfileError(str(exc)) from None
    try:
        embedding = load_embedding_file(target)
    except ProfileError as exc:
        raise ProfileError(f"{source}: its embedding {spec['embedding']!r}: {exc}") from None
    label = ProfileLabel(spec.get("name") or path.stem, forbidden, allowed, source, _attribute_forbidden(spec))
    return PSAProfile(embedding[None], (label,))


def _attribute_forbidden(spec: dict) -> tuple[str, ...] | None:
    """The Sage policy's set for the attributes kept beside an embedding (None without attributes)."""
    attrs = {k: v for k, v in spec.items() if k.strip().lower() in ATTRIBUTE_KEYS and v not in (None, "")}
    attrs = {k: v for k, v in attrs.items() if k.strip().lower() not in ("user_id", "cluster_id")}
    return attribute_forbidden(StructuredProfile.from_dict(attrs, spec.get("name") or "profile")) if attrs else None


def normalise_user_id(user_id: str | int) -> str:
    """Sage ``User_ID``: 1-based row number, zero-padded to 7 digits."""
    text = str(user_id).strip()
    if not text.isdigit() or int(text) < 1:
        raise ProfileError(f"Sage User_ID must be a positive number, got {user_id!r}")
    return f"{int(text):07d}"


def read_sage_users(table: Path) -> dict[str, dict[str, str]]:
    """``sage_users.csv`` → {User_ID: row}; User_ID is the 1-based row number when not a column."""
    try:
        with open(table, newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
        return {normalise_user_id(r.get("User_ID") or i + 1): r for i, r in enumerate(rows)}
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ProfileError(f"{Path(table).name}: cannot read the Sage users table ({exc.__class__.__name__}); "
                           "copy sage_users.csv from the published Sage data again") from None


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
            try:
                forbidden = _categories(parse_category_list(row["Banned_Categories"] or ""), SAGE_USERS_FILE)
                allowed = _categories(parse_category_list(row["Allowed_Categories"] or ""), SAGE_USERS_FILE,
                                      "allowed")
            except KeyError as exc:
                raise ProfileError(f"{SAGE_USERS_FILE}: column {exc} is missing; copy the published table "
                                   "again") from None
    label = ProfileLabel(name or f"Sage user {uid}", forbidden, allowed, f"{SAGE_EMBEDDINGS_DIR}/{uid}.npy")
    return PSAProfile(load_embedding_file(emb_path)[None], (label,))


def load_preset(folder: Path, preset: str) -> PSAProfile:
    """A published operating point ("level") resolved through the Sage folder."""
    if preset not in LEVEL_PRESETS:
        raise ProfileError(f"unknown PSA preset {preset!r}; choose one of {list(LEVEL_PRESETS)}")
    return load_sage_user(folder, LEVEL_PRESETS[preset], name=preset)
