"""The profile vocabulary shared by the loaders, the attribute schema and the policies.

The seven safety categories of the Sage data set (docs/sage_policy.md), the error every profile
problem is raised as, the Sage folder layout, and the guarded reader for the small JSON files a
profiles folder holds (docs/security.md, "Errors"). ``schema.py`` (attribute profiles) builds on
this module alone; ``profile.py`` (embedding and profile files) builds on it and on ``schema.py``
(the attributes a profile .json may hold beside its embedding), so neither imports the other back.
"""
from __future__ import annotations

import json
from pathlib import Path

CATEGORIES = ("Hate", "Harassment", "Violence", "Self-Harm", "Sexuality", "Shocking", "Propaganda")

# The Sage users table and the folder of their embeddings, inside a profiles folder (README: Files and folders).
SAGE_USERS_FILE = "sage_users.csv"
SAGE_EMBEDDINGS_DIR = "sage_embeddings"
# A profile or template .json is a few hundred bytes; anything over 1 MiB is not one.
MAX_JSON_BYTES = 1 << 20


class ProfileError(ValueError):
    """A profile cannot be loaded or combined as asked."""


def short_repr(value, limit: int = 60) -> str:
    """``repr(value)`` cut to ``limit`` characters, for error messages."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def parse_category_list(text: str) -> list[str]:
    """Sage's ``"['Hate', 'Violence']"`` cells → ``['Hate', 'Violence']``."""
    text = text.strip()
    if text in ("", "[]"):
        return []
    return [part.strip().strip("'\"") for part in text.strip("[]").split(",") if part.strip()]


MAX_NUMBER_DIGITS = 100  # far beyond any age or id; Python's own limit is 4300 digits


class _JSONShapeError(ValueError):
    """A JSON detail the pack refuses: a key given twice, a number of absurd length."""


def _no_duplicate_keys(pairs: list) -> dict:
    seen: dict = {}
    for key, value in pairs:
        if key in seen:
            raise _JSONShapeError(f"the key {key!r} appears twice (a reader would see only the last value)")
        seen[key] = value
    return seen


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_NUMBER_DIGITS:
        raise _JSONShapeError(f"a number with {len(text.lstrip('-'))} digits")
    return int(text)


def _json_failure(exc: BaseException) -> str:
    """What went wrong, in our words (a library's message may carry advice such as raising a limit)."""
    if isinstance(exc, UnicodeDecodeError):
        return "not UTF-8 text"
    if isinstance(exc, RecursionError):
        return "nested too deeply"
    if isinstance(exc, _JSONShapeError):
        return str(exc)
    if isinstance(exc, json.JSONDecodeError):
        return f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return exc.__class__.__name__


def read_json_file(path: Path, what: str = "profile JSON"):
    """A small JSON file's content; every failure (size, encoding, syntax, nesting, a key given twice,
    a number over :data:`MAX_NUMBER_DIGITS` digits) is a :class:`ProfileError`."""
    path = Path(path)
    if not path.is_file():  # also refuses FIFOs and devices, which would block or never end
        raise ProfileError(f"{path.name}: not a regular file; put a {what} file into models/psa_profiles")
    try:
        size = path.stat().st_size
        if size > MAX_JSON_BYTES:
            raise ProfileError(f"{path.name}: {size} bytes is too large for a {what} (limit {MAX_JSON_BYTES}); "
                               "this is not a profile file — remove it from models/psa_profiles")
        return json.loads(path.read_bytes().decode("utf-8"), object_pairs_hook=_no_duplicate_keys,
                          parse_int=_bounded_int)
    except ProfileError:
        raise
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        detail = _json_failure(exc)
        raise ProfileError(f"{path.name}: cannot read {what} ({detail}); fix the file (UTF-8 JSON object, "
                           "see docs/security.md) or remove it from models/psa_profiles") from None
