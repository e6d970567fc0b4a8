"""The README's install route: a clone inside a user's ComfyUI is never touched by provisioning.

The data-loss case (docs/security.md): ``git clone … custom_nodes/ComfyUI-PSA`` followed by
``COMFYUI_PATH=<that ComfyUI> bash scripts/provision.sh`` used to delete the clone and put a link
to itself in its place. Here the route runs on a copy of the provisioned ComfyUI tree, then
ComfyUI's own start-up imports the pack from the clone.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO_ROOT

PACK = "ComfyUI-PSA"


def _user_comfyui(comfy_host: Path, tmp_path: Path) -> Path:
    host = tmp_path / "ComfyUI"
    shutil.copytree(comfy_host, host, symlinks=True, ignore=shutil.ignore_patterns("custom_nodes", "output",
                                                                                   "input", "temp", "user"))
    (host / "custom_nodes").mkdir()
    return host


def _provision(pack: Path, host: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, COMFYUI_PATH=str(host), PSA_PYTHON=sys.executable)
    return subprocess.run(["bash", str(pack / "scripts" / "provision.sh")], env=env, capture_output=True, text=True,
                          timeout=300)


def test_clone_in_custom_nodes_survives_provisioning_and_loads(comfy_host, tmp_path):
    if not (REPO_ROOT / ".git").exists():
        pytest.skip("the install route clones this checkout with git; this copy of the pack is not a git checkout")
    host = _user_comfyui(comfy_host, tmp_path)
    clone = host / "custom_nodes" / PACK
    subprocess.run(["git", "clone", "-q", str(REPO_ROOT), str(clone)], check=True, timeout=120)
    (clone / "my_notes.txt").write_text("untracked work of the user\n")
    head = subprocess.run(["git", "-C", str(clone), "rev-parse", "HEAD"], capture_output=True, text=True).stdout

    result = _provision(clone, host)

    assert result.returncode == 0, result.stderr
    assert clone.is_dir() and not clone.is_symlink()
    assert (clone / ".git").is_dir() and (clone / "my_notes.txt").read_text() == "untracked work of the user\n"
    assert subprocess.run(["git", "-C", str(clone), "rev-parse", "HEAD"], capture_output=True,
                          text=True).stdout == head
    assert "already in the host's custom_nodes" in result.stderr
    assert sorted(p.name for p in (host / "custom_nodes").iterdir()) == [PACK]

    # ComfyUI itself imports the pack from the clone (start-up only, then exit).
    started = subprocess.run([sys.executable, "main.py", "--cpu", "--quick-test-for-ci", "--disable-auto-launch"],
                             cwd=host, capture_output=True, text=True, timeout=300)
    log = started.stdout + started.stderr
    assert started.returncode == 0, log[-3000:]
    imported = [line for line in log.splitlines() if line.strip().endswith(f"custom_nodes/{PACK}")
                or line.strip().endswith(f"custom_nodes{os.sep}{PACK}")]
    assert imported and not any("IMPORT FAILED" in line for line in imported), log[-3000:]


def test_foreign_folder_at_the_link_path_is_left_alone(comfy_host, tmp_path):
    host = _user_comfyui(comfy_host, tmp_path)
    other = host / "custom_nodes" / PACK
    other.mkdir()
    (other / "keep.txt").write_text("someone else's files\n")

    result = _provision(REPO_ROOT, host)

    assert result.returncode != 0
    assert "left untouched" in result.stderr and "what to do" in result.stderr
    assert (other / "keep.txt").read_text() == "someone else's files\n" and not other.is_symlink()
