"""Model folders of the pack: ``models/psa_adapters``, ``models/psa_profiles`` and the LLM folders.

:func:`register` adds them to ComfyUI's ``folder_paths`` (called once, by the pack's
``comfy_entrypoint``; importing this module changes nothing), so ``extra_model_paths.yaml``
entries of the same names add more locations, like any other model type.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import folder_paths

from psa_model.profiles.vocabulary import MAX_JSON_BYTES, SAGE_EMBEDDINGS_DIR

ADAPTERS = "psa_adapters"
PROFILES = "psa_profiles"
ADAPTER_EXTENSIONS = {".safetensors", ".bin"}
PROFILE_EXTENSIONS = {".npy", ".json", ".safetensors"}
LLM_FOLDERS = ("LLM", "psa_llm")  # Hugging Face model folders and profile templates (any file type)


def register() -> None:
    """Add every folder of the pack to ``folder_paths``, its default (``models/<name>``) first; idempotent."""
    folders = [(ADAPTERS, ADAPTER_EXTENSIONS), (PROFILES, PROFILE_EXTENSIONS)] + [(n, set()) for n in LLM_FOLDERS]
    for name, extensions in folders:
        default = os.path.join(folder_paths.models_dir, name)
        if name in folder_paths.folder_names_and_paths:
            paths, exts = folder_paths.folder_names_and_paths[name]
            if default not in paths:
                paths.insert(0, default)
            folder_paths.folder_names_and_paths[name] = (paths, set(exts) | extensions)
        else:
            folder_paths.folder_names_and_paths[name] = ([default], set(extensions))


def listable(name: str) -> bool:
    """Names a browser can show and send back (a name that is not valid UTF-8 is skipped)."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def safe_list(folder: str) -> list[str]:
    """File names in a model folder; never raises (docs/security.md, "Listing").

    Listing reads no file content, so no file — whatever its size or bytes — can break a node's
    input list or ``/object_info``; a bad file errors only when a prompt selects it.
    """
    try:
        names = folder_paths.get_filename_list(folder)
    except Exception:  # noqa: BLE001 - an unreadable folder lists as empty rather than hiding the node
        return []
    return sorted(n for n in names if isinstance(n, str) and listable(n))


def adapter_files() -> list[str]:
    return safe_list(ADAPTERS)


def profile_files() -> list[str]:
    """Profile files, without the per-user files of a Sage embeddings folder (use PSA Sage User)."""
    return [f for f in safe_list(PROFILES) if SAGE_EMBEDDINGS_DIR not in Path(f).parts]


def roots(folder: str) -> list[Path]:
    """The registered locations of a model folder (where file references must stay; docs/security.md)."""
    return [Path(p) for p in folder_paths.get_folder_paths(folder)]


def full_path(folder: str, name: str) -> Path:
    path = folder_paths.get_full_path(folder, name)
    if path is None:
        inside = os.path.relpath(os.path.join(os.sep, name), os.sep)  # no climbing out, as ComfyUI does
        for root in folder_paths.get_folder_paths(folder):
            if os.path.lexists(os.path.join(root, inside)):
                raise FileNotFoundError(f"'{name}' in {folder} is not a regular file (a folder, pipe, device or "
                                        "broken link); replace it with the file itself")
        raise FileNotFoundError(f"'{name}' is not in any {folder} folder ({', '.join(folder_paths.get_folder_paths(folder))}); "
                                "put the file there and refresh the page")
    return Path(path)


def sage_folder() -> Path:
    """The first ``psa_profiles`` folder that holds a ``sage_embeddings`` subfolder."""
    folders = folder_paths.get_folder_paths(PROFILES)
    for folder in folders:
        if (Path(folder) / SAGE_EMBEDDINGS_DIR).is_dir():
            return Path(folder)
    raise FileNotFoundError(f"no {SAGE_EMBEDDINGS_DIR}/ folder in {folders}: copy the published Sage embeddings "
                            f"({{User_ID}}.npy) into <psa_profiles>/{SAGE_EMBEDDINGS_DIR}/ and sage_users.csv beside it")


def check_choice(input_name: str, value, options: list[str], where: str) -> bool | str:
    """A node's ``validate_inputs`` answer for a file list: True, or what is wrong and how to fix it.

    ComfyUI checks the value of an old-style list input against its choices before running, but
    not that of a node-schema ``Combo``; this puts the check back for the inputs that name files,
    so a workflow naming a missing file is refused up front, as before, with the input named.
    """
    if not isinstance(value, str) or value in options:  # a linked value is checked when the node runs
        return True
    shown = ", ".join(options[:10]) + (f", … ({len(options)} in all)" if len(options) > 10 else "")
    return f"{input_name} '{value}' is not in {where} (there: {shown or 'nothing'}); put the file there and refresh"


def _stat_key(path: Path) -> str:
    try:
        stat = path.stat()
        return f"{stat.st_mtime_ns}:{stat.st_size}"
    except OSError:
        return "missing"


def file_fingerprint(folder: str, name: str) -> str:
    """Changes when the file (or, for a profile ``.json``, the embedding it names) changes on disk.

    For ComfyUI's ``IS_CHANGED``: without it an edited file would be served from the execution
    cache. Never raises (a missing or bad file errors when the node runs).
    """
    try:
        path = folder_paths.get_full_path(folder, name)
        if path is None:
            return f"missing:{name}"
        path = Path(path)
        key = f"{name}:{_stat_key(path)}"
        if path.suffix == ".json" and path.is_file() and path.stat().st_size <= MAX_JSON_BYTES:
            data = json.loads(path.read_bytes().decode("utf-8"))
            if isinstance(data, dict) and isinstance(data.get("embedding"), str):
                key += f"|{_stat_key(path.parent / data['embedding'])}"
        return key
    except Exception:  # noqa: BLE001 - a fingerprint never fails; loading reports the problem
        return f"unreadable:{name}"
