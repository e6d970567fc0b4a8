"""Confinement of the paths that files refer to (docs/security.md, "Confinement").

A profile ``.json`` names its embedding file; that name comes from a file someone may have
downloaded, so it must not reach outside the model folders the operator registered. The rule:
the reference is joined to the referring file's folder, every symlink is resolved, and the
result must lie inside one of the allowed roots (themselves resolved). Anything else — absolute
paths elsewhere, ``..`` climbing out, a link inside a folder that points outside — is refused
with one message that does not depend on whether the target exists.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable


class PathEscapeError(ValueError):
    """A referenced path resolves outside the allowed folders."""


def _inside(path: str, root: str) -> bool:
    try:
        return os.path.commonpath([path, root]) == root
    except ValueError:  # different drives (Windows) or mixed absolute/relative
        return False


def confined_path(reference: str, base: Path, roots: Iterable[Path], what: str, source: str) -> Path:
    """``base / reference`` with symlinks resolved, provided it lies inside one of ``roots``.

    ``what`` names the reference (e.g. "embedding") and ``source`` the referring file, for the
    message. The check looks only at the path text and links, never at whether the target exists,
    so the refusal reads the same for existing and missing files.
    """
    if not isinstance(reference, str) or not reference.strip() or "\x00" in reference:
        raise PathEscapeError(f"{source}: '{what}' must be a non-empty file name relative to the file, "
                              f"got {reference!r}")
    resolved = os.path.realpath(os.path.join(os.fspath(base), reference))
    allowed = [os.path.realpath(os.fspath(r)) for r in roots]
    if not any(_inside(resolved, root) for root in allowed):
        raise PathEscapeError(f"{source}: '{what}' {reference!r} points outside the model folders; refusing to "
                              "read it. Put the file into the same models folder (or a subfolder) and give its "
                              "name relative to the profile file (see docs/security.md)")
    return Path(resolved)


def under_roots(name: str, roots: Iterable[Path], what: str) -> Path | None:
    """The first ``root / name`` that stays inside its root (checked on the text) and exists; else None.

    For names chosen from a node's list (LLM folders, templates). Links the operator put into a
    root are followed, like ComfyUI does for model files; ``..`` or an absolute name that leaves
    every root raises :class:`PathEscapeError`.
    """
    roots = list(roots)
    escaped = True
    for root in roots:
        root_text = os.path.abspath(os.fspath(root))
        candidate = os.path.normpath(os.path.join(root_text, name))
        if not _inside(candidate, root_text):
            continue
        escaped = False
        if os.path.exists(candidate):
            return Path(candidate)
    if escaped and roots:
        raise PathEscapeError(f"{what} {name!r} points outside the model folders; choose one from the list")
    return None
