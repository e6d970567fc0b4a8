"""Structured user profiles: validated attributes + forbidden/allowed categories (README: Profiles from attributes).

A :class:`StructuredProfile` is what an operator types (or stores in an attribute-only ``.json``
in ``models/psa_profiles``). Vocabularies are the values used by the Sage users table
(``sage_users.csv``), so profiles line up with the data the published adapters were trained on.
Input is matched case-insensitively and stored in the canonical Sage spelling.

Canonical JSON (sorted keys, no name) is what the embedding cache keys on.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

from .vocabulary import CATEGORIES, MAX_JSON_BYTES, ProfileError, parse_category_list, read_json_file

GENDERS = ("male", "female")
RELIGIONS = ("None", "Christianity", "Islam", "Buddhism")
PHYSICAL_CONDITIONS = ("healthy", "hearing impairment", "visual impairment", "intellectual disability")
MENTAL_CONDITIONS = ("healthy", "depression", "anxiety", "natural disasters", "major accidents",
                     "sexual assault", "war")
# Age groups of the Sage table with inclusive age ranges (checked against all 1001 rows; age 4
# does not occur there and is put with "children").
AGE_GROUPS = (
    ("infants & toddlers", 0, 3),
    ("children", 4, 12),
    ("adolescents", 13, 19),
    ("young adults", 20, 34),
    ("middle-aged", 35, 59),
    ("young elderly", 60, 74),
    ("elderly", 75, 89),
    ("long-lived elderly", 90, 120),
)
MIN_AGE, MAX_AGE = 0, 120

# Accepted keys (snake case and the Sage column names) → field name.
_KEYS = {
    "age": "age", "age_group": "age_group", "gender": "gender", "religion": "religion",
    "mental_condition": "mental_condition", "mental": "mental_condition",
    "physical_condition": "physical_condition", "physical": "physical_condition",
    "forbidden": "forbidden", "banned": "forbidden", "banned_categories": "forbidden",
    "allowed": "allowed", "allowed_categories": "allowed",
}
_IGNORED_KEYS = {"name", "user_id", "cluster_id"}
ATTRIBUTES = ("age", "age_group", "gender", "religion", "mental_condition", "physical_condition")
# Attribute keys (any accepted spelling) that may stand beside an embedding in a profile .json.
ATTRIBUTE_KEYS = frozenset(k for k, field in _KEYS.items() if field in ATTRIBUTES) | {"user_id", "cluster_id"}


def age_group_for(age: int) -> str:
    for name, low, high in AGE_GROUPS:
        if low <= age <= high:
            return name
    raise ProfileError(f"age must be {MIN_AGE}–{MAX_AGE}, got {age}")


def _choice(field: str, value, allowed: tuple[str, ...]) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    if field == "religion" and text.lower() in ("", "none", "no religion"):
        return "None"
    if text == "":
        return None
    for option in allowed:
        if option.lower() == text.lower():
            return option
    raise ProfileError(f"unknown {field.replace('_', ' ')} {text!r}; allowed: {list(allowed)}")


def _age(value) -> int | None:
    if value is None or (isinstance(value, str) and value.strip() == ""):
        return None
    if isinstance(value, bool):
        raise ProfileError(f"age must be a whole number {MIN_AGE}–{MAX_AGE}, got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ProfileError(f"age must be a whole number {MIN_AGE}–{MAX_AGE}, got {value!r}") from None
    if number != int(number) or not MIN_AGE <= number <= MAX_AGE:
        raise ProfileError(f"age must be a whole number {MIN_AGE}–{MAX_AGE}, got {value!r}")
    return int(number)


def canonical_categories(values, what: str = "category") -> tuple[str, ...] | None:
    """A list (or Sage ``"['A', 'B']"`` / comma-separated string) → categories in canonical order."""
    if values is None:
        return None
    if isinstance(values, str):
        values = parse_category_list(values)
    lookup = {c.lower(): c for c in CATEGORIES}
    out = []
    for value in values:
        key = str(value).strip().lower()
        if key not in lookup:
            raise ProfileError(f"unknown {what} {value!r}; the categories are {list(CATEGORIES)}")
        out.append(lookup[key])
    return tuple(sorted(set(out), key=CATEGORIES.index))


@dataclass(frozen=True)
class StructuredProfile:
    """Validated attributes (each optional) plus forbidden/allowed categories (``None``: not decided)."""

    age: int | None = None
    age_group: str | None = None
    gender: str | None = None
    religion: str | None = None
    mental_condition: str | None = None
    physical_condition: str | None = None
    forbidden: tuple[str, ...] | None = None
    allowed: tuple[str, ...] | None = None
    name: str = ""

    @classmethod
    def create(cls, *, age=None, age_group=None, gender=None, religion=None, mental_condition=None,
               physical_condition=None, forbidden=None, allowed=None, name: str = "") -> "StructuredProfile":
        """Validate and canonicalise; raises :class:`ProfileError` with the allowed values."""
        age = _age(age)
        group = _choice("age_group", age_group, tuple(g for g, _, _ in AGE_GROUPS))
        if age is not None:
            derived = age_group_for(age)
            if group is not None and group != derived:
                raise ProfileError(f"age {age} belongs to age group {derived!r}, not {group!r}")
            group = derived
        forbidden = canonical_categories(forbidden, "forbidden category")
        allowed = canonical_categories(allowed, "allowed category")
        if forbidden is not None and allowed is not None:
            both = set(forbidden) & set(allowed)
            if both:
                raise ProfileError(f"categories both forbidden and allowed: {sorted(both)}")
            missing = set(CATEGORIES) - set(forbidden) - set(allowed)
            if missing:
                raise ProfileError(f"categories neither forbidden nor allowed: {sorted(missing)}")
        elif forbidden is not None:
            allowed = tuple(c for c in CATEGORIES if c not in forbidden)
        elif allowed is not None:
            forbidden = tuple(c for c in CATEGORIES if c not in allowed)
        profile = cls(age, group, _choice("gender", gender, GENDERS), _choice("religion", religion, RELIGIONS),
                      _choice("mental_condition", mental_condition, MENTAL_CONDITIONS),
                      _choice("physical_condition", physical_condition, PHYSICAL_CONDITIONS),
                      forbidden, allowed, str(name or ""))
        if profile.is_empty():
            raise ProfileError("empty profile: give at least one attribute (age, gender, religion, mental or "
                               "physical condition) or the forbidden categories")
        return profile

    @classmethod
    def from_dict(cls, data: dict, source: str = "profile") -> "StructuredProfile":
        if not isinstance(data, dict):
            raise ProfileError(f"{source}: a profile must be a JSON object, got {type(data).__name__}")
        kwargs: dict = {}
        for key, value in data.items():
            norm = str(key).strip().lower()
            if norm in _IGNORED_KEYS:
                if norm == "name":
                    kwargs["name"] = value
                continue
            if norm not in _KEYS:
                raise ProfileError(f"{source}: unknown profile key {key!r}; accepted keys: "
                                   f"{sorted(set(_KEYS) | _IGNORED_KEYS)}")
            kwargs[_KEYS[norm]] = value
        try:
            return cls.create(**kwargs)
        except ProfileError as exc:
            raise ProfileError(f"{source}: {exc}") from None

    @classmethod
    def from_json_object(cls, data, source: str = "profile") -> "StructuredProfile":
        """Like :meth:`from_dict`, plus JSON types checked strictly (a file, not a table row or widget).

        ``age`` a whole number, text attributes strings, ``forbidden``/``allowed`` lists of category
        names (a bare string such as ``"Hate"`` is refused rather than guessed at).
        """
        if not isinstance(data, dict):
            raise ProfileError(f"{source}: a profile must be a JSON object with the keys "
                               f"{sorted(set(_KEYS) | _IGNORED_KEYS)}, got {type(data).__name__}")
        for key, value in data.items():
            norm = str(key).strip().lower()
            if norm not in _KEYS and norm not in _IGNORED_KEYS:
                break  # from_dict names the unknown key, whatever its value's type
            field = _KEYS.get(norm, norm)
            if value is None:
                continue
            if field == "age":
                ok = isinstance(value, int) and not isinstance(value, bool)
                expected = "a whole number"
            elif field in ("forbidden", "allowed"):
                ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
                expected = 'a list of category names such as ["Hate", "Violence"]'
            elif field in ("user_id", "cluster_id"):
                ok = isinstance(value, (str, int)) and not isinstance(value, bool)
                expected = "a number or text"
            else:
                ok = isinstance(value, str)
                expected = "text"
            if not ok:
                shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:60] + "..."
                raise ProfileError(f"{source}: {key!r} must be {expected}, got {type(value).__name__} {shown}")
        return cls.from_dict(data, source)

    @classmethod
    def from_sage_row(cls, row: dict, name: str = "") -> "StructuredProfile":
        """A row of ``sage_users.csv`` / ``sage_center_users.csv`` (columns read by header name)."""
        return cls.create(age=row.get("Age"), age_group=row.get("Age_Group"), gender=row.get("Gender"),
                          religion=row.get("Religion"), mental_condition=row.get("Mental_Condition"),
                          physical_condition=row.get("Physical_Condition"),
                          forbidden=row.get("Banned_Categories"), allowed=row.get("Allowed_Categories"), name=name)

    def is_empty(self) -> bool:
        return all(getattr(self, f) is None for f in ATTRIBUTES) and self.forbidden is None

    def with_categories(self, forbidden) -> "StructuredProfile":
        forbidden = canonical_categories(forbidden, "forbidden category")
        return replace(self, forbidden=forbidden, allowed=tuple(c for c in CATEGORIES if c not in forbidden))

    def to_dict(self, include_name: bool = False) -> dict:
        out = {f: getattr(self, f) for f in ATTRIBUTES if getattr(self, f) is not None}
        if self.forbidden is not None:
            out["forbidden"] = list(self.forbidden)
            out["allowed"] = list(self.allowed)
        if include_name and self.name:
            out["name"] = self.name
        return out

    def canonical_json(self) -> str:
        """Sorted keys, compact, no name: equal profiles give equal strings (the cache key)."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"), ensure_ascii=False)

    def user_data_json(self) -> str:
        """The attributes as the reference passes them to the category prompt (``<<USER_DATA>>``)."""
        names = {"age": "Age", "age_group": "Age_Group", "gender": "Gender", "religion": "Religion",
                 "mental_condition": "Mental_Condition", "physical_condition": "Physical_Condition"}
        return json.dumps({names[f]: getattr(self, f) for f in ATTRIBUTES if getattr(self, f) is not None},
                          ensure_ascii=False)


def check_attribute_values(data: dict, source: str) -> None:
    """Raise :class:`ProfileError` if an attribute in ``data`` (age, gender, …; Sage column names too) has a
    value an attribute-only profile would refuse. Other keys are not looked at here (README: Files and folders)."""
    given = {}
    for key, value in data.items():
        field = _KEYS.get(str(key).strip().lower())
        if field in ATTRIBUTES and not (value is None or (isinstance(value, str) and not value.strip())):
            given[field] = value
    if given:
        try:
            StructuredProfile.create(**given)
        except ProfileError as exc:
            raise ProfileError(f"{source}: {exc}") from None


def load_structured_profile(path: Path) -> StructuredProfile:
    """An attribute-only profile ``.json`` (no ``embedding`` key) → :class:`StructuredProfile`, strictly checked."""
    path = Path(path)
    data = read_json_file(path)
    if isinstance(data, dict) and "embedding" in data:
        raise ProfileError(f"{path.name} points at an embedding file; load it with PSA Load Profile")
    profile = StructuredProfile.from_json_object(data, path.name)
    return profile if profile.name else replace(profile, name=path.stem)


def is_attribute_profile_file(path: Path) -> bool:
    """Whether a ``.json`` belongs in PSA Profile Policy's list; never raises (docs/security.md, "Listing").

    Only a well-formed JSON object with an ``embedding`` key is left out (it belongs to PSA Load
    Profile); every other ``.json`` — including damaged ones — is listed, so that selecting it
    shows what is wrong instead of the file silently missing.
    """
    path = Path(path)
    if path.suffix != ".json":
        return False
    try:
        if not path.is_file():  # a FIFO or device is never opened while listing
            return True
        if path.stat().st_size > MAX_JSON_BYTES:
            return True
        data = json.loads(path.read_bytes().decode("utf-8"))
    except Exception:  # noqa: BLE001 - listing must never fail; the error shows when the file is chosen
        return True
    return not (isinstance(data, dict) and "embedding" in data)
