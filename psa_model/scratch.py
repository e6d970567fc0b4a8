"""Folders the pack deletes in carry a marker file written when the pack creates them (docs/security.md,
"Deleting files").

A scratch or cache folder chosen by the user (``--work``, ``--cache``, an environment variable) may
already hold the user's own files. The pack deletes inside a folder only when the folder carries
:data:`MARKER`; without it nothing is deleted and :class:`ScratchError` says what to do.
"""
from __future__ import annotations

import shutil
from pathlib import Path

MARKER = ".psa-scratch"
_MARKER_TEXT = "Created by PSA for ComfyUI as a scratch/cache folder: the pack may delete anything in it.\n"
_PACK_CACHE = Path(__file__).resolve().parents[1] / ".cache"  # the checkout's own (git-ignored) cache


class ScratchError(RuntimeError):
    """A folder the pack would delete in is not marked as the pack's."""


def is_marked(folder: Path) -> bool:
    return (Path(folder) / MARKER).is_file()


def _mark(folder: Path) -> None:
    (folder / MARKER).write_text(_MARKER_TEXT, encoding="utf-8")


def _inside_pack_cache(folder: Path) -> bool:
    return folder.resolve().is_relative_to(_PACK_CACHE.resolve())


def claim(folder: Path, purpose: str, adopt: bool = False) -> Path:
    """``folder`` as the pack's scratch folder for ``purpose``: created with the marker when missing,
    marked when empty (or inside the checkout's own ``.cache``, or when the caller has checked that
    it holds only files the pack wrote: ``adopt``), accepted when already marked.

    Raises :class:`ScratchError` for an existing, non-empty folder without the marker (nothing is deleted)."""
    folder = Path(folder)
    if is_marked(folder):
        return folder
    if not folder.exists():
        folder.mkdir(parents=True)
        _mark(folder)
        return folder
    if folder.is_dir() and (adopt or _inside_pack_cache(folder) or not any(folder.iterdir())):
        _mark(folder)
        return folder
    raise ScratchError(f"{folder} already exists and was not created by PSA as {purpose} (no {MARKER} file in it); "
                       "nothing was deleted. Choose a new or empty folder; if this folder really is scratch space "
                       f"for the pack, delete it or put an empty {MARKER} file into it")


def remove(path: Path, owner: Path) -> bool:
    """Delete ``path`` (a file or a folder tree) inside ``owner``, which must carry the marker.

    Returns whether something was deleted. Raises :class:`ScratchError` when ``owner`` is not marked
    or ``path`` does not lie inside it (links are not followed out of it)."""
    path, owner = Path(path), Path(owner)
    if not is_marked(owner):
        raise ScratchError(f"refusing to delete {path}: {owner} was not created by PSA (no {MARKER} file in it); "
                           "nothing was deleted. Choose a new or empty folder for the pack's scratch files")
    if not (path.parent.resolve() / path.name).is_relative_to(owner.resolve()) or path.resolve() == owner.resolve():
        raise ScratchError(f"refusing to delete {path}: it is not inside the scratch folder {owner}")
    if path.is_symlink() or path.is_file():
        path.unlink()
        return True
    if path.is_dir():
        shutil.rmtree(path)
        return True
    return False
