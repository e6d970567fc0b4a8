"""Model folders of the pack: ``models/psa_adapters`` and ``models/psa_profiles``.

Registered with ComfyUI's ``folder_paths`` so ``extra_model_paths.yaml`` entries named
``psa_adapters`` / ``psa_profiles`` add more locations, like any other model type.
"""
from __future__ import annotations

import os
from pathlib import Path

import folder_paths

ADAPTERS = "psa_adapters"
PROFILES = "psa_profiles"
ADAPTER_EXTENSIONS = {".safetensors", ".bin"}
PROFILE_EXTENSIONS = {".npy", ".json", ".safetensors"}
SAGE_EMBEDDINGS_DIR = "sage_embeddings"


def register() -> None:
    for name, extensions in ((ADAPTERS, ADAPTER_EXTENSIONS), (PROFILES, PROFILE_EXTENSIONS)):
        default = os.path.join(folder_paths.models_dir, name)
        if name in folder_paths.folder_names_and_paths:
            paths, exts = folder_paths.folder_names_and_paths[name]
            if default not in paths:
                paths.insert(0, default)
            folder_paths.folder_names_and_paths[name] = (paths, set(exts) | extensions)
        else:
            folder_paths.folder_names_and_paths[name] = ([default], set(extensions))


def adapter_files() -> list[str]:
    return sorted(folder_paths.get_filename_list(ADAPTERS))


def profile_files() -> list[str]:
    """Profile files, without the per-user files of a Sage embeddings folder (use PSA Sage User)."""
    return sorted(f for f in folder_paths.get_filename_list(PROFILES)
                  if SAGE_EMBEDDINGS_DIR not in Path(f).parts)


def full_path(folder: str, name: str) -> Path:
    path = folder_paths.get_full_path(folder, name)
    if path is None:
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
