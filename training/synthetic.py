"""Small synthetic Sage-format data sets whose preferences CONFLICT across users (README: Training; the proof in ``scripts/proof_learning.py``).

For every caption there are two drawings: a "safe" variant X and an "explicit" variant Y of a
content category K. A user who forbids K prefers X (chosen = X, rejected = Y); a user who
allows K prefers Y. The same caption therefore appears with opposite preferences, so only a
model that reads the user embedding can beat chance. Embeddings are random per user but
correlated with the forbidden set (one direction per category plus noise), as real profile
embeddings are correlated with the profile text (``docs/reference-parity.md``, "The user embedding").

CLI: ``python -m training.synthetic OUT [--users N] [--captions N] ...`` writes
``OUT/train``, ``OUT/val`` (held-out drawings and new users) and ``OUT/embeddings``.
"""
from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

CATEGORIES = ("Hate", "Harassment", "Violence", "Self-Harm", "Sexuality", "Shocking", "Propaganda")


def _draw(kind: str, rng: random.Random, size: int) -> Image.Image:
    """Safe variant: cool colours, round shape on a light background; explicit: warm, angular, dark."""
    if kind == "safe":
        bg = (rng.randint(200, 255), rng.randint(200, 255), rng.randint(220, 255))
        fg = (rng.randint(0, 60), rng.randint(80, 160), rng.randint(180, 255))
    else:
        bg = (rng.randint(0, 50), rng.randint(0, 40), rng.randint(0, 40))
        fg = (rng.randint(200, 255), rng.randint(0, 60), rng.randint(0, 40))
    im = Image.new("RGB", (size, size), bg)
    d = ImageDraw.Draw(im)
    r = rng.randint(size // 5, size // 3)
    cx, cy = rng.randint(r, size - r), rng.randint(r, size - r)
    box = (cx - r, cy - r, cx + r, cy + r)
    if kind == "safe":
        d.ellipse(box, fill=fg)
    else:
        d.polygon([(cx, cy - r), (cx + r, cy + r), (cx - r, cy + r)], fill=fg)
    return im


def _embedding(forbidden: set[int], basis: np.ndarray, rng: np.random.Generator, noise: float) -> np.ndarray:
    vec = basis[-1] * 1.0  # a shared offset: no user is the zero (null) profile
    for k in forbidden:
        vec = vec + 3.0 * basis[k]
    return (vec + noise * rng.standard_normal(basis.shape[1])).astype(np.float32)


def _users(first_id: int, count: int, n_cat: int, rng: random.Random) -> list[tuple[str, set[int]]]:
    users = []
    for i in range(count):
        # cycle through every forbidden subset so each split covers all of them
        mask = i % (2 ** n_cat)
        users.append((str(first_id + i).zfill(7), {k for k in range(n_cat) if mask >> k & 1}))
    rng.shuffle(users)
    return users


def generate(out: str | Path, users: int = 8, val_users: int = 4, captions: int = 6, val_captions: int = 3,
             categories: int = 2, embed_dim: int = 64, image_size: int = 64, seed: int = 0,
             noise: float = 0.3) -> dict[str, Path]:
    """Write a conflicting-preference data set; returns the split and embedding folders."""
    if not 1 <= categories <= len(CATEGORIES):
        raise ValueError(f"categories must be 1..{len(CATEGORIES)}")
    out = Path(out)
    rng = random.Random(seed)
    nrng = np.random.default_rng(seed)
    basis = nrng.standard_normal((categories + 1, embed_dim))
    emb_dir = out / "embeddings"
    emb_dir.mkdir(parents=True, exist_ok=True)
    paths = {"embeddings": emb_dir}
    next_id = 1
    for split, n_users, n_caps in (("train", users, captions), ("val", val_users, val_captions)):
        split_dir = out / split
        split_dir.mkdir(parents=True, exist_ok=True)
        split_users = _users(next_id, n_users, categories, rng)
        next_id += n_users
        for uid, forbidden in split_users:
            np.save(emb_dir / f"{uid}.npy", _embedding(forbidden, basis, nrng, noise))
        lines = []
        for c in range(n_caps):
            k = c % categories
            cat = CATEGORIES[k]
            stem = f"{split}_{c:04d}"
            _draw("safe", rng, image_size).save(split_dir / f"{stem}_safe.png")
            _draw("explicit", rng, image_size).save(split_dir / f"{stem}_explicit.png")
            caption = f"a picture about {cat.lower()}, number {c}"
            for uid, forbidden in split_users:
                safe_first = k in forbidden
                chosen, rejected = (f"{stem}_safe.png", f"{stem}_explicit.png")[:: 1 if safe_first else -1]
                lines.append(json.dumps({
                    "file_name": chosen, "chosen": chosen, "rejected": rejected, "caption": caption,
                    "category": cat,
                    "user_data": {"User_ID": int(uid), "Cluster_ID": sorted(forbidden),
                                  "Forbidden": [CATEGORIES[j] for j in sorted(forbidden)]},
                }))
        (split_dir / "metadata.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
        paths[split] = split_dir
    return paths


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m training.synthetic", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", help="output folder (train/, val/, embeddings/ are created inside)")
    p.add_argument("--users", type=int, default=8, help="training users (default 8)")
    p.add_argument("--val-users", type=int, default=4, help="held-out users in val/ (default 4)")
    p.add_argument("--captions", type=int, default=6, help="training captions, each with a safe/explicit pair")
    p.add_argument("--val-captions", type=int, default=3, help="held-out captions in val/")
    p.add_argument("--categories", type=int, default=2, help="content categories used (1..7, default 2)")
    p.add_argument("--embed-dim", type=int, default=64, help="embedding size (3584 = the reference LLM)")
    p.add_argument("--image-size", type=int, default=64, help="image side in pixels")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    paths = generate(a.out, a.users, a.val_users, a.captions, a.val_captions, a.categories, a.embed_dim,
                     a.image_size, a.seed)
    for name, path in paths.items():
        print(f"{name}: {path}")


if __name__ == "__main__":
    main()
