"""The Sage policy: forbidden categories from attributes, as the Sage labels decide them (docs/sage_policy.md).

The policy is data: ``data/sage_policy.json``, written by ``python -m
psa_model.profiles.derive_sage_policy`` from the 1001 Sage users (``sage_users.csv``) and shipped
with the pack. See ``docs/sage_policy.md`` for the derivation, the measured agreement and the
fallbacks; in short:

* **Shape** — like the rule policy: every attribute value (age group, gender, religion, physical
  condition, mental condition) forbids a set of categories, and a user's forbidden set is the
  union over the user's values. A value forbids a category when at least ``forbid_share`` of the
  Sage users with that value have it banned.
* **Age** — mapped to the Sage age group whose observed age range (stated in the data file)
  contains it; an age in a gap between two observed ranges takes the forbids of both
  neighbouring groups, an age above the oldest observed one belongs to the oldest group.
* **Fallbacks (forbid when uncertain)** — a value with fewer than ``min_users`` Sage users, or
  one the data file does not know, forbids every category; an attribute that is not given
  contributes the union of the forbids of all its values. Combinations of values never seen
  together in Sage are decided by their values (the union), each backed by its own users.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from .vocabulary import CATEGORIES, ProfileError
from .schema import StructuredProfile

DATA_FILE = Path(__file__).resolve().parent / "data" / "sage_policy.json"
# The attributes the policy reads, in table order, with their labels in the Sage CSV and in text.
POLICY_ATTRIBUTES: tuple[tuple[str, str, str], ...] = (
    ("age_group", "Age_Group", "age group"),
    ("gender", "Gender", "gender"),
    ("religion", "Religion", "religion"),
    ("physical_condition", "Physical_Condition", "physical condition"),
    ("mental_condition", "Mental_Condition", "mental condition"),
)
LABELS = {field: label for field, _, label in POLICY_ATTRIBUTES}


@dataclass(frozen=True)
class AgeGroup:
    name: str
    min_age: int  # youngest and oldest age observed in Sage for this group
    max_age: int


@dataclass(frozen=True)
class Decision:
    """What the Sage policy decided: forbidden set, the value rules that fired, the fallbacks used."""

    forbidden: tuple[str, ...]
    fired: tuple[str, ...]
    notes: tuple[str, ...]


def _ordered(categories) -> tuple[str, ...]:
    chosen = set(categories)
    return tuple(c for c in CATEGORIES if c in chosen)


class SagePolicy:
    """A derived Sage policy (the dict that ``derive_sage_policy`` writes)."""

    def __init__(self, data: dict):
        try:
            self.age_groups = tuple(AgeGroup(g["name"], int(g["min_age"]), int(g["max_age"]))
                                    for g in data["age_groups"])
            self.values: dict[str, dict[str, dict]] = data["values"]
            self.method: dict = data["method"]
        except (KeyError, TypeError, ValueError) as exc:
            raise ProfileError(f"the Sage policy data is malformed ({exc!r}); regenerate it with "
                               "python -m psa_model.profiles.derive_sage_policy --write") from None
        self.data = data

    def age_groups_for(self, age: int) -> tuple[str, ...]:
        """The group(s) whose forbids apply at ``age``: inside an observed range one group, in a gap both."""
        groups = self.age_groups
        for group in groups:
            if group.min_age <= age <= group.max_age:
                return (group.name,)
        if age > groups[-1].max_age:
            return (groups[-1].name,)
        if age < groups[0].min_age:
            return (groups[0].name,)
        for younger, older in zip(groups, groups[1:]):
            if younger.max_age < age < older.min_age:
                return (younger.name, older.name)
        raise ProfileError(f"age {age} falls in no Sage age group (overlapping groups in the policy data?)")

    def forbids(self, field: str, value: str) -> tuple[tuple[str, ...], bool]:
        """(categories the value forbids, whether that is the forbid-when-uncertain fallback)."""
        entry = self.values.get(field, {}).get(value)
        if entry is None:
            return CATEGORIES, True
        return _ordered(entry["forbids"]), bool(entry["uncertain"])

    def _profile_values(self, profile: StructuredProfile, field: str) -> tuple[tuple[str, ...], str | None]:
        if field == "age_group" and profile.age is not None:
            groups = self.age_groups_for(profile.age)
            note = None
            if len(groups) > 1:
                note = (f"age {profile.age} lies between the ages seen in Sage for {' and '.join(groups)}: "
                        "the forbids of both apply")
            return groups, note
        value = getattr(profile, field)
        if value is None:
            return tuple(self.values.get(field, {})), "not given"
        return (value,), None

    def decide(self, profile: StructuredProfile) -> Decision:
        forbidden: set[str] = set()
        fired: list[str] = []
        notes: list[str] = []
        for field, _, label in POLICY_ATTRIBUTES:
            values, note = self._profile_values(profile, field)
            if note == "not given":
                union = _ordered(c for v in values for c in self.forbids(field, v)[0])
                if union:
                    forbidden.update(union)
                    fired.append(f"{label} not given → {', '.join(union)}")
                    notes.append(f"{label} not given: the forbids of every {label} apply (forbid when uncertain)")
                continue
            if note:
                notes.append(note)
            for value in values:
                cats, uncertain = self.forbids(field, value)
                if uncertain:
                    notes.append(f"{label} {value!r} has too few Sage users to decide: it forbids every category "
                                 "(forbid when uncertain)")
                if cats:
                    forbidden.update(cats)
                    fired.append(f"{label} = {value} → {', '.join(cats)}")
        return Decision(_ordered(forbidden), tuple(fired), tuple(notes))

    # --- tables for the README and the node's explanation -------------------------------------
    def value_label(self, field: str, value: str) -> str:
        if field == "age_group":
            for group in self.age_groups:
                if group.name == value:
                    return f"{value} (ages {group.min_age}–{group.max_age} in Sage)"
        return value

    def table(self) -> str:
        """Markdown: one row per attribute value — Sage users with it and the categories it forbids."""
        lines = ["| attribute | value | Sage users | forbids |", "|---|---|---:|---|"]
        for field, _, label in POLICY_ATTRIBUTES:
            for value, entry in self.values.get(field, {}).items():
                cats = ", ".join(_ordered(entry["forbids"])) or "—"
                if entry["uncertain"]:
                    cats += " (too few users: forbid when uncertain)"
                lines.append(f"| {label} | {self.value_label(field, value)} | {entry['users']} | {cats} |")
        return "\n".join(lines)

    def rules(self) -> str:
        """One line per category: the attribute values that forbid it (the same policy, read by column)."""
        lines = []
        for cat in CATEGORIES:
            parts = []
            for field, _, label in POLICY_ATTRIBUTES:
                hits = [v for v, e in self.values.get(field, {}).items() if cat in e["forbids"]]
                if hits:
                    parts.append(f"{label} ∈ {{{', '.join(hits)}}}")
            lines.append(f"{cat} forbidden when: {' or '.join(parts) or 'never'}")
        return "\n".join(lines)

    def summary(self) -> str:
        """The rules per category plus the measured agreement with the Sage labels."""
        text = self.rules()
        cv = self.data.get("agreement", {}).get("cross_validated")
        if cv:
            text += (f"\n\nAgreement with the Sage labels ({self.method.get('folds')}-fold cross-validated): "
                     f"exact forbidden set {cv['exact']:.3f}; per category "
                     + ", ".join(f"{c} {cv[c]:.3f}" for c in CATEGORIES))
        return text


@lru_cache(maxsize=4)
def _load(path: str) -> SagePolicy:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ProfileError(f"cannot read the Sage policy data {path} ({exc}); reinstall the pack or regenerate it "
                           "with python -m psa_model.profiles.derive_sage_policy --write") from None
    return SagePolicy(data)


def load_sage_policy(path: Path = DATA_FILE) -> SagePolicy:
    """The shipped Sage policy (read once per process)."""
    return _load(str(Path(path).resolve()))
