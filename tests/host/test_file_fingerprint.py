"""IS_CHANGED fingerprints: an edited profile or adapter file is not served from ComfyUI's cache."""
from __future__ import annotations

import importlib
import json
import os

import numpy as np

from devkit.pack_loader import PACK_MODULE, load_pack


def test_fingerprint_follows_the_file_and_its_embedding(comfy_host, tmp_path, monkeypatch):
    import folder_paths

    load_pack()
    folders = importlib.import_module(f"{PACK_MODULE}.nodes.folders")
    monkeypatch.setitem(folder_paths.folder_names_and_paths, "psa_profiles", ([str(tmp_path)], {".json", ".npy"}))
    np.save(tmp_path / "u.npy", np.zeros(4, np.float32))
    (tmp_path / "p.json").write_text(json.dumps({"embedding": "u.npy"}))
    first = folders.file_fingerprint("psa_profiles", "p.json")
    assert folders.file_fingerprint("psa_profiles", "p.json") == first  # unchanged file → cache hit
    np.save(tmp_path / "u.npy", np.ones(5, np.float32))  # only the embedding the .json names changes
    os.utime(tmp_path / "u.npy", ns=(1, 1))
    assert folders.file_fingerprint("psa_profiles", "p.json") != first
    (tmp_path / "p.json").write_bytes(b"\xff not json")  # never raises, whatever the content
    assert folders.file_fingerprint("psa_profiles", "p.json")
    assert folders.file_fingerprint("psa_profiles", "missing.json") == "missing:missing.json"
