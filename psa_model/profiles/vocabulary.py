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


def read_json_file(path: Path, what: str = "profile JSON"):
    """A small JSON file's content; every failure (size, encoding, syntax, nesting) is a :class:`ProfileError`."""
    path = Path(path)
    if not path.is_file():  # also refuses FIFOs and devices, which would block or never end
        raise ProfileError(f"{path.name}: not a regular file; put a {what} file into models/psa_profiles")
    try:
        size = path.stat().st_size
        if size > MAX_JSON_BYTES:
            raise ProfileError(f"{path.name}: {size} bytes is too large for a {what} (limit {MAX_JSON_BYTES}); "
                               "this is not a profile file — remove it from models/psa_profiles")
        return json.loads(path.read_bytes().decode("utf-8"))
    except ProfileError:
        raise
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        detail = "not UTF-8 text" if isinstance(exc, UnicodeDecodeError) else (
            "nested too deeply" if isinstance(exc, RecursionError) else str(exc).splitlines()[0][:200])
        raise ProfileError(f"{path.name}: cannot read {what} ({detail}); fix the file (UTF-8 JSON object, "
                           "see docs/security.md) or remove it from models/psa_profiles") from None
