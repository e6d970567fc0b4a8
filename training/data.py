"""Sage-format preference data: reading, validation, images and embeddings.

Format: ``docs/reference-parity.md``, "Data and images".

A split folder holds ``metadata.jsonl`` (one JSON object per line with ``file_name``,
``chosen``, ``rejected``, ``caption``, ``user_data.User_ID``) and the images beside it; an
embeddings folder holds ``{User_ID}.npy`` (7-digit zero-padded id, ``docs/reference-parity.md``, "The user embedding").
Unlike the reference loader, a missing embedding is never replaced by zeros: every record is
validated before training and problems are reported with counts (:class:`DataValidationError`).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError


class DataValidationError(ValueError):
    """The data set cannot be trained on as given (message lists what is wrong and how often)."""


@dataclass(frozen=True)
class PreferencePair:
    """One preference record: the image the user should see (chosen) and should not (rejected)."""

    chosen: Path
    rejected: Path
    caption: str
    user_id: str
    line: int


@dataclass
class SageDataset:
    """Validated records of one split plus the user embeddings they reference (float32 [E])."""

    root: Path
    pairs: list[PreferencePair]
    embeddings: dict[str, torch.Tensor]
    embed_dim: int
    skipped: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.pairs)

    def embedding_batch(self, pairs: list[PreferencePair]) -> torch.Tensor:
        return torch.stack([self.embeddings[p.user_id] for p in pairs])


def user_id_string(raw) -> str:
    """``User_ID`` as the 7-digit zero-padded file stem (``docs/reference-parity.md``, "The user embedding")."""
    text = str(raw).strip()
    if not text.isdigit():
        raise DataValidationError(f"User_ID {raw!r} is not a number")
    return text.zfill(7)


def load_embedding(path: Path, expected_dim: int | None = None) -> torch.Tensor:
    """Read ``{User_ID}.npy`` (shape ``(E,)``, ``(1, E)`` or ``(1, 1, E)``, as the nodes' profile
    loader reads them) → float32 [E]; reject bad files."""
    try:
        arr = np.load(path, allow_pickle=False)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is a data error
        # numpy's text is not passed on (for a pickled array it names the switch that would load it).
        raise DataValidationError(f"embedding {path.name}: not a plain numeric .npy file ({exc.__class__.__name__}); "
                                  "save it with numpy.save(path, float32_array) — pickled arrays are never "
                                  "loaded") from None
    if arr.ndim not in (1, 2, 3) or arr.size != arr.shape[-1]:
        raise DataValidationError(f"embedding {path.name}: shape {arr.shape}, expected (E,), (1, E) or (1, 1, E)")
    vec = torch.from_numpy(np.ascontiguousarray(arr.reshape(-1), dtype=np.float32))
    if expected_dim is not None and vec.numel() != expected_dim:
        raise DataValidationError(f"embedding {path.name}: dimension {vec.numel()}, expected {expected_dim} "
                                  "(all embeddings must come from the same embedding model as the adapter)")
    if not torch.isfinite(vec).all():
        raise DataValidationError(f"embedding {path.name}: contains NaN or infinite values")
    if not vec.abs().sum() > 0:
        raise DataValidationError(f"embedding {path.name}: all zeros (a zero embedding is the null profile, "
                                  "not a user)")
    return vec


def _read_metadata(root: Path) -> list[tuple[int, dict]]:
    meta = root / "metadata.jsonl"
    if not meta.is_file():
        raise DataValidationError(f"{root}: no metadata.jsonl (expected a Sage-format split folder)")
    records = []
    for n, line in enumerate(meta.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataValidationError(f"{meta}:{n}: not valid JSON ({exc.msg})") from None
        except (ValueError, RecursionError) as exc:  # a number of thousands of digits, deep nesting
            raise DataValidationError(f"{meta}:{n}: not a record this trainer reads ({exc.__class__.__name__}: a "
                                      "number too long or nesting too deep)") from None
        if not isinstance(rec, dict):
            raise DataValidationError(f"{meta}:{n}: not a JSON object")
        missing = [k for k in ("chosen", "rejected", "caption", "user_data") if k not in rec]
        if missing or "User_ID" not in (rec.get("user_data") or {}):
            raise DataValidationError(f"{meta}:{n}: missing field(s) {missing or ['user_data.User_ID']}")
        records.append((n, rec))
    if not records:
        raise DataValidationError(f"{meta}: no records")
    return records


def load_split(root: str | Path, embeddings_dir: str | Path, skip_missing: bool = False,
               expected_dim: int | None = None) -> SageDataset:
    """Validate every record of a split before any training (README: Training).

    Missing images / embeddings are counted; unless ``skip_missing`` the run stops with a
    report. Unreadable, zero, non-finite or wrongly-sized embeddings always stop the run.
    """
    root, embeddings_dir = Path(root), Path(embeddings_dir)
    if not embeddings_dir.is_dir():
        raise DataValidationError(f"embeddings folder {embeddings_dir} does not exist")
    records = _read_metadata(root)
    missing_images: list[str] = []
    missing_embeddings: set[str] = set()
    missing_embedding_records = 0
    pairs: list[PreferencePair] = []
    embeddings: dict[str, torch.Tensor] = {}
    dim = expected_dim
    checked: set[Path] = set()
    for n, rec in records:
        uid = user_id_string(rec["user_data"]["User_ID"])
        chosen, rejected = root / rec["chosen"], root / rec["rejected"]
        bad = False
        for img in (chosen, rejected):
            if not img.is_file():
                missing_images.append(f"line {n}: {img.name}")
                bad = True
            elif img not in checked:
                check_image_header(img)
                checked.add(img)
        if uid not in embeddings:
            path = embeddings_dir / f"{uid}.npy"
            if path.is_file():
                embeddings[uid] = load_embedding(path, dim)
                dim = embeddings[uid].numel()
            else:
                missing_embeddings.add(uid)
        if uid in missing_embeddings:
            missing_embedding_records += 1
            bad = True
        if not bad:
            pairs.append(PreferencePair(chosen, rejected, str(rec["caption"]), uid, n))
    skipped = {"missing_images": len(missing_images), "missing_embedding_users": len(missing_embeddings),
               "missing_embedding_records": missing_embedding_records,
               "records_skipped": len(records) - len(pairs)}
    if (missing_images or missing_embeddings) and not skip_missing:
        raise DataValidationError(
            f"{root}: {len(records)} records, {len(missing_images)} missing image file(s) "
            f"(e.g. {missing_images[:3]}), {len(missing_embeddings)} user(s) without an embedding in "
            f"{embeddings_dir} affecting {missing_embedding_records} record(s) (e.g. {sorted(missing_embeddings)[:3]}). "
            "Fix the data or pass --skip-missing to train on the remaining records "
            f"({len(pairs)}); embeddings are never replaced by zeros.")
    if not pairs:
        raise DataValidationError(f"{root}: no usable records left after skipping missing files ({skipped})")
    return SageDataset(root, pairs, embeddings, int(dim), skipped)


def random_subset(pairs: list[PreferencePair], count: int, seed: int) -> list[PreferencePair]:
    """``count`` records drawn without replacement by a seeded permutation (the reference's
    ``max_train_samples`` with its seed 2025 selects its subset the same way)."""
    order = torch.randperm(len(pairs), generator=torch.Generator().manual_seed(seed)).tolist()
    return [pairs[i] for i in order[:min(count, len(pairs))]]


def check_image_header(path: Path) -> None:
    """Fail early on files that are not decodable images (header check, cheap)."""
    try:
        with Image.open(path) as im:
            im.verify()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DataValidationError(f"image {path}: not a readable image ({exc.__class__.__name__}: {exc})") from None


RESIZE_FILTERS = {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR}


CROP_ROUNDINGS = ("pack", "reference")


def resize_and_crop_box(width: int, height: int, resolution: int, rounding: str = "pack") -> tuple[tuple[int, int],
                                                                                                    tuple[int, int]]:
    """``((resized width, height), (left, top))`` for shorter side → ``resolution`` and a centre crop.

    ``pack`` rounds the long side and floors the crop offset; ``reference`` does what torchvision's
    ``Resize(int)`` + ``CenterCrop`` do in the reference's data set: the long side truncated,
    the offset rounded (``docs/reference-parity.md``, "Data and images"). They differ by at most
    one pixel, on non-square images only.
    """
    if rounding not in CROP_ROUNDINGS:
        raise ValueError(f"crop rounding {rounding!r}: use one of {CROP_ROUNDINGS}")
    scale = resolution / min(width, height)
    if rounding == "reference":
        size = tuple(resolution if side == min(width, height) else int(resolution * side / min(width, height))
                     for side in (width, height))
        return size, (int(round((size[0] - resolution) / 2.0)), int(round((size[1] - resolution) / 2.0)))
    size = (max(resolution, round(width * scale)), max(resolution, round(height * scale)))
    return size, ((size[0] - resolution) // 2, (size[1] - resolution) // 2)


def load_image(path: Path, resolution: int, flip: bool = False, resize_filter: str = "bicubic",
               crop_rounding: str = "pack") -> torch.Tensor:
    """Image → [H, W, 3] float in [0, 1] (ComfyUI's IMAGE layout; its VAE maps to [−1, 1]).

    Resize the shorter side to ``resolution`` (``resize_filter``: bicubic, or bilinear as the
    reference), center crop (:func:`resize_and_crop_box`), optional horizontal flip
    (``docs/reference-parity.md``, "Data and images").
    """
    try:
        with Image.open(path) as im:
            im.load()
            im = im.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DataValidationError(f"image {path}: cannot be decoded ({exc.__class__.__name__}: {exc})") from None
    size, (left, top) = resize_and_crop_box(*im.size, resolution, crop_rounding)
    im = im.resize(size, RESIZE_FILTERS[resize_filter])
    im = im.crop((left, top, left + resolution, top + resolution))
    arr = torch.from_numpy(np.asarray(im, dtype=np.float32) / 255.0)
    return arr.flip(1) if flip else arr


def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def data_fingerprint(dataset: SageDataset) -> str:
    """sha256 over the metadata file, every used embedding and every image's size and name."""
    h = hashlib.sha256((dataset.root / "metadata.jsonl").read_bytes())
    for uid in sorted(dataset.embeddings):
        h.update(uid.encode())
        h.update(dataset.embeddings[uid].numpy().tobytes())
    for p in dataset.pairs:
        for img in (p.chosen, p.rejected):
            h.update(f"{img.name}:{img.stat().st_size}".encode())
    return h.hexdigest()[:16]
