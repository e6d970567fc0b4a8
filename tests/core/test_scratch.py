"""Folders the pack deletes in must carry its marker (docs/security.md, "Deleting files"): a user's
files in a folder given as --work, --cache or the toy world's cache are never deleted."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from psa_model.profiles.embedding_cache import EmbeddingCache
from psa_model.scratch import MARKER, ScratchError, claim, remove

KEY = "ab" * 32


def _user_file(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "my_notes.txt"
    path.write_text("mine")
    return path


def test_claim_marks_new_and_empty_folders_and_refuses_a_users_folder(tmp_path):
    assert (claim(tmp_path / "new" / "deeper", "x") / MARKER).is_file()
    (tmp_path / "empty").mkdir()
    assert (claim(tmp_path / "empty", "x") / MARKER).is_file()
    mine = _user_file(tmp_path / "mine")
    with pytest.raises(ScratchError, match=r"mine already exists and was not created by PSA as the test's scratch"):
        claim(tmp_path / "mine", "the test's scratch")
    assert mine.read_text() == "mine" and not (tmp_path / "mine" / MARKER).exists()


def test_remove_deletes_only_inside_a_marked_folder(tmp_path):
    mine = _user_file(tmp_path / "mine" / "cache")
    with pytest.raises(ScratchError, match=r"mine was not created by PSA"):
        remove(tmp_path / "mine" / "cache", tmp_path / "mine")
    assert mine.exists()
    work = claim(tmp_path / "work", "x")
    with pytest.raises(ScratchError, match="not inside the scratch folder"):
        remove(tmp_path / "mine", work)
    (work / "link").symlink_to(tmp_path / "mine", target_is_directory=True)
    assert remove(work / "link", work) and mine.exists()  # the link goes, not what it points to
    _user_file(work / "sub")
    assert remove(work / "sub", work) and not (work / "sub").exists()


def test_toy_world_cache_refuses_a_folder_it_did_not_make(tmp_path, monkeypatch):
    from toy_world.world import CACHE_ENV, cache_folder, ensure_world, source_hash

    stale = _user_file(tmp_path / "W" / f"tiny-{source_hash()}")  # no world.json: looked like a failed build
    with pytest.raises(ScratchError, match=r"W already exists and was not created by PSA as the toy world's cache"):
        ensure_world("tiny", cache=tmp_path / "W", log=lambda _: None)
    assert stale.read_text() == "mine"
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "from_env"))
    assert cache_folder() == tmp_path / "from_env"
    assert cache_folder(tmp_path / "flag") == tmp_path / "flag"


def test_benchmarks_work_folder_must_be_the_benchmarks(tmp_path, capsys):
    from benchmarks.__main__ import main

    mine = _user_file(tmp_path / "W" / "encoder" / "cache")
    with pytest.raises(SystemExit) as info:
        main(["--only", "encoder", "--quick", "--no-plots", "--work", str(tmp_path / "W"), "--out",
              str(tmp_path / "out")])
    assert info.value.code == 2
    assert "was not created by PSA as the benchmarks' scratch folder (--work)" in capsys.readouterr().err
    assert mine.read_text() == "mine"


def test_profile_cache_clears_only_its_entries(tmp_path):
    cache = EmbeddingCache(tmp_path / "cache")
    cache.put(KEY, torch.ones(4))
    mine = _user_file(tmp_path / "cache")
    (tmp_path / "cache" / "my_embedding.safetensors").write_bytes(b"mine")
    assert cache.clear() == 1 and mine.exists() and (tmp_path / "cache" / "my_embedding.safetensors").exists()


def test_profile_cache_folder_of_an_older_version_is_adopted_but_a_users_folder_is_not(tmp_path):
    old = tmp_path / "old"
    old.mkdir()
    (old / f"{KEY}.safetensors").write_bytes(b"x")
    EmbeddingCache(old).put("cd" * 32, torch.ones(4))
    assert (old / MARKER).is_file() and EmbeddingCache(old).clear() == 2
    users = tmp_path / "users"
    _user_file(users)
    (users / f"{KEY}.safetensors").write_bytes(b"x")
    with pytest.raises(ScratchError):
        EmbeddingCache(users).clear()
    assert (users / f"{KEY}.safetensors").exists()


def test_demo_models_never_replace_a_real_file(tmp_path):
    from devkit.demo_models import _link

    src, dst = tmp_path / "src.bin", tmp_path / "models" / "dst.bin"
    src.write_bytes(b"demo")
    _user_file(dst.parent)
    dst.write_bytes(b"users checkpoint")
    with pytest.raises(FileExistsError, match="not a link made by the demo"):
        _link(src, dst)
    assert dst.read_bytes() == b"users checkpoint"
    dst.unlink()
    _link(src, dst)
    _link(src, dst)  # an earlier run's link is renewed
    assert dst.is_symlink() and dst.read_bytes() == b"demo"
