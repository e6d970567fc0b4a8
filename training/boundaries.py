"""Preference data that separates a user's boundaries from their attributes (README, "Training":
"Boundaries apart from attributes"; docs/toy-world.md, "Boundaries and attributes").

In Sage, a user's forbidden set is a function of the attributes (docs/sage_policy.md: a
per-value table reproduces every label), so an adapter trained on it cannot tell whether to read
the categories or the attributes from the embedding — and it reads the attributes. The recipe
here adds **resampled users**: a copy of a training user with the same attributes, an explicit
forbidden set drawn independently of them, an embedding encoded for that set, and the user's
pairs made consistent with it — for every pair whose category changed status, chosen and
rejected are swapped (the safe image is chosen exactly when the category is forbidden).

A pair's category must be known: a record's ``category`` field (one of the seven categories, as
:mod:`training.synthetic` writes it), or a caption → category map. Records of a category no
resampled set changes are copied as they are.

The split written gets a ``boundaries.json`` beside its ``metadata.jsonl``; the trainer records
its content in the adapter's metadata (``training.boundary_data``), which is how the pack tells
adapters trained this way from the published ones (:mod:`psa_model.profiles.boundaries`).

CLI::

    python -m training.boundaries SPLIT EMBEDDINGS OUT --users sage_users.csv --llm FOLDER
        [--template FILE] [--share 0.5] [--seed 0] [--category-map captions.json]
"""
from __future__ import annotations

import argparse
import json
import random
import shutil
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from psa_model.profiles.boundaries import MARKER_FILE, RECIPE_NAME
from psa_model.profiles.schema import StructuredProfile
from psa_model.profiles.vocabulary import CATEGORIES

from .data import DataValidationError, user_id_string


def random_forbidden(rng: random.Random, probability: float = 0.5) -> tuple[str, ...]:
    """A forbidden set drawn independently of any attribute: each category with ``probability``."""
    return tuple(c for c in CATEGORIES if rng.random() < probability)


def record_category(record: dict, category_map: dict[str, str] | None = None) -> str:
    """The category a preference record is about (its ``category`` field, else the caption map)."""
    category = record.get("category")
    if category is None and category_map is not None:
        category = category_map.get(record.get("caption", ""))
    if category not in CATEGORIES:
        raise DataValidationError(f"record for caption {record.get('caption', '')!r} has no known category "
                                  f"({category!r}); give each record a 'category' field (one of {list(CATEGORIES)}) "
                                  "or a caption → category map (--category-map)")
    return category


def consistent_record(record: dict, category: str, old_forbidden: Sequence[str], new_forbidden: Sequence[str],
                      new_user_id: str) -> dict:
    """The record for the resampled user: chosen/rejected swapped when the category changed status."""
    out = json.loads(json.dumps(record))
    if (category in old_forbidden) != (category in new_forbidden):
        out["chosen"], out["rejected"] = record["rejected"], record["chosen"]
        if "file_name" in out:
            out["file_name"] = out["chosen"]
    user_data = dict(out.get("user_data") or {})
    user_data["User_ID"] = new_user_id
    user_data["Forbidden"] = list(new_forbidden)
    user_data["Resampled_From"] = record["user_data"]["User_ID"]
    out["user_data"] = user_data
    return out


def resample(records: list[dict], forbidden: dict[str, tuple[str, ...]], share: float, seed: int,
             first_new_id: int, category_map: dict[str, str] | None = None) -> tuple[list[dict], dict[str, tuple]]:
    """Records plus those of resampled users: ``share`` of the users (rounded, at least one) get a copy
    with an independent explicit set. ``forbidden``: User_ID → the user's set as labelled.

    Returns (all records, new User_ID → (source User_ID, new forbidden set)).
    """
    if not 0 < share <= 1:
        raise ValueError(f"share {share}: use a fraction in (0, 1]")
    rng = random.Random(seed)
    users = sorted({user_id_string(r["user_data"]["User_ID"]) for r in records})
    missing = [u for u in users if u not in forbidden]
    if missing:
        raise DataValidationError(f"{len(missing)} users have no forbidden set (e.g. {missing[:3]}); give the "
                                  "users table their labels come from")
    chosen = sorted(rng.sample(users, max(1, round(share * len(users)))))
    new_users: dict[str, tuple] = {}
    for i, uid in enumerate(chosen):
        new_set = random_forbidden(rng)
        while new_set == forbidden[uid]:   # a copy with the same set adds nothing
            new_set = random_forbidden(rng)
        new_users[f"{first_new_id + i:07d}"] = (uid, new_set)
    by_source: dict[str, list[str]] = {}
    for new_id, (uid, _) in new_users.items():
        by_source.setdefault(uid, []).append(new_id)
    out = list(records)
    for record in records:
        uid = user_id_string(record["user_data"]["User_ID"])
        for new_id in by_source.get(uid, ()):
            category = record_category(record, category_map)
            out.append(consistent_record(record, category, forbidden[uid], new_users[new_id][1], new_id))
    return out, new_users


def write_split(split: Path, embeddings: Path, out: Path, records: list[dict], new_embeddings: dict[str, np.ndarray],
                info: dict) -> Path:
    """``out/train`` (metadata, images copied, ``boundaries.json``) and ``out/embeddings`` (old and new)."""
    train, emb_out = out / "train", out / "embeddings"
    train.mkdir(parents=True, exist_ok=True)
    emb_out.mkdir(parents=True, exist_ok=True)
    for name in sorted({r[k] for r in records for k in ("chosen", "rejected")}):
        target = train / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists():
            shutil.copy2(split / name, target)
    for path in Path(embeddings).glob("*.npy"):
        shutil.copy2(path, emb_out / path.name)
    for uid, vector in new_embeddings.items():
        np.save(emb_out / f"{uid}.npy", np.asarray(vector, dtype=np.float32))
    (train / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    write_marker(train, info)
    return train


def write_marker(split: Path, info: dict) -> None:
    """``boundaries.json`` beside ``metadata.jsonl``: the trainer copies it into the adapter's metadata."""
    (Path(split) / MARKER_FILE).write_text(json.dumps({"recipe": RECIPE_NAME, **info}, indent=1, sort_keys=True),
                                           encoding="utf-8")


def read_marker(split: str | Path) -> dict | None:
    """The split's ``boundaries.json`` (None when it was not written by this recipe)."""
    path = Path(split) / MARKER_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataValidationError(f"{path}: not readable JSON ({exc}); write it again with training.boundaries") from None
    if not isinstance(data, dict):
        raise DataValidationError(f"{path}: expected a JSON object; write it again with training.boundaries")
    return data


def encode_with_llm(folder: Path, template: Path | None) -> Callable:
    """An encode function (profiles → embeddings) through the pack's LLM encoder, published recipe."""
    def encode(profiles):
        from psa_model.profiles.llm_encoder import ProfileEncoder, load_template  # noqa: PLC0415 - heavy (torch): keeps this module light to import

        with ProfileEncoder(folder, load_template(template)) as encoder:
            return encoder.encode(profiles).numpy()
    return encode


def main(argv: list[str] | None = None) -> int:
    from psa_model.profiles.profile import read_sage_users  # noqa: PLC0415 - heavy (torch): keeps this module light to import

    p = argparse.ArgumentParser(prog="python -m training.boundaries", description=__doc__.split("\n\n")[0])
    p.add_argument("split", type=Path, help="Sage split folder (metadata.jsonl + images)")
    p.add_argument("embeddings", type=Path, help="folder of {User_ID}.npy")
    p.add_argument("out", type=Path, help="output folder (train/ and embeddings/ are written)")
    p.add_argument("--users", type=Path, required=True, help="sage_users.csv: attributes and Banned_Categories")
    p.add_argument("--llm", type=Path, required=True, help="the LLM folder the embeddings were made with")
    p.add_argument("--template", type=Path, help="profile template (default: the pack's)")
    p.add_argument("--share", type=float, default=0.5, help="share of users that get a resampled copy")
    p.add_argument("--category-map", type=Path, help="JSON object caption → category, for records without one")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    records = [json.loads(line) for line in (a.split / "metadata.jsonl").read_text(encoding="utf-8").splitlines()
               if line.strip()]
    table = read_sage_users(a.users)
    profiles = {uid: StructuredProfile.from_sage_row(row) for uid, row in table.items()}
    forbidden = {uid: prof.forbidden or () for uid, prof in profiles.items()}
    category_map = json.loads(a.category_map.read_text(encoding="utf-8")) if a.category_map else None
    first = max(int(u) for u in table) + 1
    records, new_users = resample(records, forbidden, a.share, a.seed, first, category_map)
    new_profiles = [profiles[src].with_categories(cats) for src, cats in new_users.values()]
    vectors = encode_with_llm(a.llm, a.template)(new_profiles)
    info = {"share": a.share, "seed": a.seed, "resampled_users": len(new_users), "users": len(forbidden)}
    train = write_split(a.split, a.embeddings, a.out, records, dict(zip(new_users, vectors)), info)
    print(f"{len(new_users)} resampled users, {len(records)} records: {train}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
