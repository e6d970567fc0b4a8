"""Lay out a ComfyUI models folder for the main job and the server tests.

Random-weight *smoke* models only: the tiny fixtures (``devkit/fixtures.py``), demo PSA
adapters whose layer widths are read from those files, and demo profiles. They exercise every
code path; their images are noise by construction.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
from safetensors import safe_open

from psa_model.adapter.modules import REFERENCE_EMBED_DIM, AdapterConfig
from devkit.random_adapters import random_adapter, random_embeddings
from psa_model.formats.adapter_file import save_native
from psa_model.adapter.layer_map import architecture
from psa_model.profiles.vocabulary import CATEGORIES

DEMO_PROFILES = {  # name: (seed, forbidden categories) — labels for the demo, not real users
    "demo_child": (101, ["Harassment", "Hate", "Propaganda", "Self-Harm", "Sexuality", "Shocking", "Violence"]),
    "demo_teen": (102, ["Self-Harm", "Sexuality", "Violence"]),
    "demo_adult": (103, []),
}


def layer_dims_from_file(model_file: Path, arch_name: str) -> tuple[int, ...]:
    """Each adapter layer's width, read from the ``attn2.to_q`` shapes stored in a UNet file."""
    with safe_open(str(model_file), framework="pt") as fh:
        keys = set(fh.keys())
        prefix = "model.diffusion_model." if any(k.startswith("model.diffusion_model.") for k in keys) else ""
        dims = []
        for site in architecture(arch_name).sites:
            group = "middle_block" if site.block_name == "middle" else f"{site.block_name}_blocks.{site.block_id}"
            key = f"{prefix}{group}.1.transformer_blocks.{site.block_index}.attn2.to_q.weight"
            if key not in keys:
                raise ValueError(f"{model_file.name} has no {key}: not an {arch_name} UNet")
            dims.append(fh.get_slice(key).get_shape()[0])
    return tuple(dims)


def _link(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.is_symlink():  # a link from an earlier run; a real file of the user's is never replaced
        dst.unlink()
    elif dst.exists():
        if dst.resolve() == src.resolve():
            return
        raise FileExistsError(f"{dst} exists and is not a link made by the demo; nothing was deleted. Move it away "
                              "or give another models folder")
    os.symlink(src.resolve(), dst)


def write_demo_adapter(model_file: Path, arch_name: str, out: Path, seed: int) -> Path:
    config = AdapterConfig(arch=arch_name, layer_dims=layer_dims_from_file(model_file, arch_name))
    save_native(random_adapter(config, seed=seed, kv_std=0.05), out, training={"note": "random demo adapter (smoke model)"})
    return out


def write_demo_profiles(folder: Path, dim: int = REFERENCE_EMBED_DIM) -> list[str]:
    """Demo profiles: ``{name}.npy`` embeddings and ``{name}.json`` files with their labels."""
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for name, (seed, forbidden) in DEMO_PROFILES.items():
        np.save(folder / f"{name}.npy", random_embeddings(1, dim, seed=seed)[0].numpy())
        allowed = [c for c in CATEGORIES if c not in forbidden]
        spec = {"name": name, "embedding": f"{name}.npy", "forbidden": forbidden, "allowed": allowed,
                "note": "random demo embedding (smoke profile)"}
        (folder / f"{name}.json").write_text(json.dumps(spec, indent=1))
        names.append(name)
    return names


def prepare_models_dir(root: Path, fixtures: dict[str, Path], sage_data: Path | None = None) -> Path:
    """``root/{checkpoints,diffusion_models,psa_adapters,psa_profiles}`` ready for a server."""
    root.mkdir(parents=True, exist_ok=True)
    sd15 = fixtures["sd15_tiny.safetensors"]
    _link(sd15, root / "checkpoints" / sd15.name)
    adapters = root / "psa_adapters"
    adapters.mkdir(exist_ok=True)
    if not (adapters / "psa_demo_sd15.safetensors").is_file():
        write_demo_adapter(sd15, "sd15", adapters / "psa_demo_sd15.safetensors", seed=7)
    sdxl_unet = fixtures.get("sdxl_tiny_unet.safetensors")
    if sdxl_unet:
        _link(sdxl_unet, root / "diffusion_models" / sdxl_unet.name)
    sdxl_ckpt = fixtures.get("sdxl_tiny.safetensors")
    if sdxl_ckpt:
        _link(sdxl_ckpt, root / "checkpoints" / sdxl_ckpt.name)
    if (sdxl_ckpt or sdxl_unet) and not (adapters / "psa_demo_sdxl.safetensors").is_file():
        write_demo_adapter(sdxl_ckpt or sdxl_unet, "sdxl", adapters / "psa_demo_sdxl.safetensors", seed=8)
    profiles = root / "psa_profiles"
    write_demo_profiles(profiles)
    if sage_data is not None and (sage_data / "sage_users.csv").is_file():
        shutil.copy(sage_data / "sage_users.csv", profiles / "sage_users.csv")
        emb = profiles / "sage_embeddings"
        emb.mkdir(exist_ok=True)
        for f in (sage_data / "sage_embeddings").glob("*.npy"):
            shutil.copy(f, emb / f.name)
    return root
