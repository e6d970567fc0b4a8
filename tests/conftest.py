"""Test tiers and shared fixtures.

Tiers (pytest markers, assigned by folder): ``core`` (pure torch, no ComfyUI import),
``host`` (ComfyUI's library from the provisioned tree, in-process, CPU), ``server`` (the real
``main.py`` with this pack in ``custom_nodes/``). ``scripts/test.sh`` provisions the host and
runs all three.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
# Repo root (psa_model, training, devkit) and tests/ (the ``support`` helpers). ComfyUI's tree
# goes in front of both when a host test needs it: its ``nodes``/``tests`` modules must win
# over this pack's folders of the same names, which tests never import by those names.
for _path in (REPO_ROOT, REPO_ROOT / "tests"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

SHARED_DIR = Path(os.environ.get("PSA_SHARED_DIR", REPO_ROOT.parent / "shared"))
FIXTURE_DIR = Path(os.environ.get("PSA_FIXTURE_DIR", REPO_ROOT / ".cache" / "fixtures"))
TIERS = ("core", "host", "server")


def pytest_collection_modifyitems(config, items):
    for item in items:
        parts = Path(str(item.fspath)).relative_to(REPO_ROOT / "tests").parts
        if parts and parts[0] in TIERS:
            item.add_marker(getattr(pytest.mark, parts[0]))


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """``../shared`` (CI and contributors have it; users do not → skip)."""
    if not (SHARED_DIR / "data").is_dir():
        pytest.skip(f"shared data folder {SHARED_DIR} is absent (only CI and contributors have it)")
    return SHARED_DIR


@pytest.fixture(scope="session")
def comfy_host() -> Path:
    """ComfyUI's library importable in-process (CPU)."""
    from training.comfy_host import import_comfy

    return import_comfy()


@pytest.fixture(scope="session")
def fixture_paths(comfy_host) -> dict[str, Path]:
    from devkit.fixtures import ensure_fixtures

    return ensure_fixtures(FIXTURE_DIR)


@pytest.fixture(scope="session")
def sd15_checkpoint(fixture_paths):
    """(ModelPatcher, CLIP, VAE) of the tiny SD1.5 checkpoint, loaded by ComfyUI's loader."""
    import comfy.sd

    model, clip, vae, _ = comfy.sd.load_checkpoint_guess_config(
        str(fixture_paths["sd15_tiny.safetensors"]), output_vae=True, output_clip=True)
    return model, clip, vae


@pytest.fixture(scope="session")
def sdxl_unet(fixture_paths):
    """ModelPatcher of the tiny SDXL UNet (70 cross-attention layers), fp32 on CPU."""
    import comfy.sd
    import torch

    return comfy.sd.load_diffusion_model(str(fixture_paths["sdxl_tiny_unet.safetensors"]),
                                         model_options={"dtype": torch.float32})
