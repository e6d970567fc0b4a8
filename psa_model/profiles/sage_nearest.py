"""The no-LLM path: the Sage user nearest to given attributes (README: Profiles from attributes).

Ranking (lowest wins): (1) how many categories differ between the target's forbidden set and
the user's ``Banned_Categories`` (0 = same set; skipped when the target has no forbidden set),
(2) attribute distance: 1 per differing gender / religion / mental / physical condition /
age group, plus |age difference| / 200 (so age breaks ties inside a group and never outweighs
another attribute), attributes missing from the target count 0, (3) the smaller User_ID.
Only users with an embedding file are candidates when ``available`` is given.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .schema import StructuredProfile
from .profile import read_sage_users
from .vocabulary import ProfileError, SAGE_EMBEDDINGS_DIR, SAGE_USERS_FILE

_CATEGORICAL = ("gender", "religion", "mental_condition", "physical_condition", "age_group")


@dataclass(frozen=True)
class Match:
    user_id: str
    category_difference: int
    attribute_distance: float
    user: StructuredProfile

    def explain(self) -> str:
        same = "same forbidden set" if self.category_difference == 0 else \
            f"{self.category_difference} categories differ"
        return f"Sage user {self.user_id}: {same}, attribute distance {self.attribute_distance:.3f}"


def attribute_distance(target: StructuredProfile, user: StructuredProfile) -> float:
    distance = float(sum(1 for f in _CATEGORICAL
                         if getattr(target, f) is not None and getattr(target, f) != getattr(user, f)))
    if target.age is not None and user.age is not None:
        distance += abs(target.age - user.age) / 200.0
    return distance


def rank(target: StructuredProfile, users: dict[str, StructuredProfile],
         available: set[str] | None = None) -> list[Match]:
    matches = []
    for uid, user in users.items():
        if available is not None and uid not in available:
            continue
        diff = 0 if target.forbidden is None else len(set(target.forbidden) ^ set(user.forbidden or ()))
        matches.append(Match(uid, diff, attribute_distance(target, user), user))
    matches.sort(key=lambda m: (m.category_difference, m.attribute_distance, int(m.user_id)))
    return matches


def read_users(table: Path) -> dict[str, StructuredProfile]:
    """``sage_users.csv`` → {User_ID: profile}. Columns are read by header name (the centre-users file
    orders Mental/Physical differently from the users table)."""
    return {uid: StructuredProfile.from_sage_row(row, name=f"Sage user {uid}")
            for uid, row in read_sage_users(Path(table)).items()}


def available_users(folder: Path) -> set[str]:
    emb = Path(folder) / SAGE_EMBEDDINGS_DIR
    return {p.stem for p in emb.glob("*.npy") if p.stem.isdigit()} if emb.is_dir() else set()


def nearest_sage_user(target: StructuredProfile, folder: Path) -> Match:
    """Nearest user among those with ``folder/sage_embeddings/{id}.npy``; ``folder/sage_users.csv`` holds the table."""
    folder = Path(folder)
    table = folder / SAGE_USERS_FILE
    if not table.is_file():
        raise ProfileError(f"no {SAGE_USERS_FILE} in {folder}: copy the Sage users table beside {SAGE_EMBEDDINGS_DIR}/")
    available = available_users(folder)
    ranked = rank(target, read_users(table), available)
    if not ranked:
        raise ProfileError(f"none of the users in {SAGE_USERS_FILE} has an embedding in {folder / SAGE_EMBEDDINGS_DIR}")
    return ranked[0]
