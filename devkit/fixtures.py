"""Build tiny, deterministic models of the real SD1.5 / SDXL architectures with ComfyUI's code.

Nothing downloads weights: every parameter is filled here from a seeded generator, and the
files are written by ComfyUI's own ``comfy.sd.save_checkpoint`` so its loaders accept them.

- ``sd15_tiny.safetensors``: a single-file checkpoint (UNet + CLIP-L + VAE) that
  ``CheckpointLoaderSimple`` detects as SD1.5. The UNet keeps SD1.5's block layout (16
  cross-attention layers, same block names) with 320 channels at every level.
- ``sdxl_tiny_unet.safetensors``: a UNet-only model detected as SDXL (70 cross-attention
  layers with real SDXL block names and depths), loaded by ``UNETLoader``.
- ``sdxl_tiny.safetensors`` (optional, large): the SDXL UNet plus both SDXL text encoders and
  a VAE, for graphs that use ``CheckpointLoaderSimple``.

Usage: ``python -m devkit.fixtures OUT_DIR [--sdxl-checkpoint]``. Files are rebuilt
only when missing or when this builder's version changes (a stamp file records it).
"""
from __future__ import annotations

import argparse
import copy
import json
import math
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from training.comfy_host import import_comfy

from .unet_configs import SD15_TINY, SDXL_TINY, VAE_CONFIG

BUILDER_VERSION = "2"
SD15_FILE = "sd15_tiny.safetensors"
SDXL_UNET_FILE = "sdxl_tiny_unet.safetensors"
SDXL_CKPT_FILE = "sdxl_tiny.safetensors"

def fill_parameters(module: torch.nn.Module, seed: int) -> None:
    """Give every parameter a finite, well-scaled value (ComfyUI's ops skip initialisation).

    Weights ~ N(0, 1/fan_in) keep activations O(1) through deep stacks; norms get weight 1,
    bias 0; every other bias is 0.
    """
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            leaf = name.rsplit(".", 1)[-1]
            is_norm = any(k in name for k in ("norm", "ln_", "layer_norm", "final_layer_norm"))
            if p.ndim == 0:
                p.fill_(1.0)
            elif leaf == "bias":
                p.zero_()
            elif is_norm and p.ndim == 1:
                p.fill_(1.0)
            elif p.ndim == 1:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.02)
            else:
                fan_in = max(1, p[0].numel())
                p.copy_(torch.randn(p.shape, generator=gen) / math.sqrt(fan_in))


def _unet_state_dict(config: dict, seed: int) -> dict[str, torch.Tensor]:
    import comfy.ops  # noqa: PLC0415 - ComfyUI is importable only after import_comfy()
    from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel  # noqa: PLC0415 - ComfyUI is importable only after import_comfy()

    unet = UNetModel(**copy.deepcopy(config), operations=comfy.ops.disable_weight_init)
    fill_parameters(unet, seed)
    return unet.state_dict()


def _vae(seed: int):
    import comfy.ops  # noqa: PLC0415 - ComfyUI is importable only after import_comfy()
    import comfy.sd  # noqa: PLC0415 - ComfyUI is importable only after import_comfy()
    from comfy.ldm.models.autoencoder import AutoencoderKL  # noqa: PLC0415 - ComfyUI is importable only after import_comfy()

    ae = AutoencoderKL(ddconfig=VAE_CONFIG, embed_dim=4)
    fill_parameters(ae, seed)
    with torch.no_grad():
        # Near-deterministic latents: tiny log-variance for the encoder's second half.
        ae.encoder.conv_out.bias[4:].fill_(-20.0)
    return comfy.sd.VAE(sd=ae.state_dict())


def _clip(model_config, seed: int):
    import comfy.sd  # noqa: PLC0415 - ComfyUI is importable only after import_comfy()

    target = model_config.clip_target()
    clip = comfy.sd.CLIP(target=target)
    fill_parameters(clip.cond_stage_model, seed)
    return clip


def _save(model_patcher, clip, vae, path: Path, arch: str) -> None:
    import comfy.sd  # noqa: PLC0415 - ComfyUI is importable only after import_comfy()

    tmp = path.with_suffix(".tmp")
    comfy.sd.save_checkpoint(str(tmp), model_patcher, clip=clip, vae=vae,
                             metadata={"psa_fixture": arch})
    _halve_file(tmp, path, {"psa_fixture": arch, "psa_fixture_note": "random weights: smoke model"})


def _halve_file(src: Path, dst: Path, metadata: dict[str, str]) -> None:
    """Re-save ``src`` as ``dst`` with fp32 tensors stored as fp16 (halves the fixture size)."""
    sd = {k: (v.half() if v.dtype == torch.float32 else v) for k, v in load_file(str(src)).items()}
    save_file(sd, str(src), metadata=metadata)
    src.replace(dst)


def load_unet(sd: dict[str, torch.Tensor]):
    """A ComfyUI ``ModelPatcher`` of this UNet state dict, detected by its keys (fp32)."""
    import comfy.sd  # noqa: PLC0415 - ComfyUI is importable only after import_comfy()

    return comfy.sd.load_diffusion_model_state_dict(sd, model_options={"dtype": torch.float32})


def build_sd15(out: Path, seed: int = 15) -> Path:
    """SD1.5-detected single-file checkpoint (fp16 on disk)."""
    path = out / SD15_FILE
    patcher = load_unet({k: v.half() for k, v in _unet_state_dict(SD15_TINY, seed).items()})
    _save(patcher, _clip(patcher.model.model_config, seed + 1), _vae(seed + 2), path, "sd15")
    return path


def build_sdxl_unet(out: Path, seed: int = 21) -> Path:
    """SDXL-detected UNet-only file (fp16 on disk), same 70 cross-attention layers as SDXL."""
    import comfy.utils  # noqa: PLC0415 - ComfyUI is importable only after import_comfy()

    path = out / SDXL_UNET_FILE
    sd = {k: v.half().contiguous() for k, v in _unet_state_dict(SDXL_TINY, seed).items()}
    tmp = path.with_suffix(".tmp")
    comfy.utils.save_torch_file(sd, str(tmp), metadata={"psa_fixture": "sdxl-unet"})
    tmp.replace(path)
    return path


def build_sdxl_checkpoint(out: Path, seed: int = 21) -> Path:
    """SDXL single-file checkpoint: the tiny UNet plus full-size CLIP-L and OpenCLIP bigG."""
    path = out / SDXL_CKPT_FILE
    patcher = load_unet({k: v.half() for k, v in _unet_state_dict(SDXL_TINY, seed).items()})
    _save(patcher, _clip(patcher.model.model_config, seed + 1), _vae(seed + 2), path, "sdxl")
    return path


def _readable(path: Path) -> bool:
    """A complete safetensors file (a truncated or corrupt cache entry is rebuilt, not loaded)."""
    if not path.is_file():
        return False
    try:
        with safe_open(str(path), framework="pt") as fh:
            last = list(fh.keys())[-1]
            fh.get_slice(last)[...]
        return True
    except Exception:  # noqa: BLE001 - any parse failure means "rebuild"
        return False


def ensure_fixtures(out: Path, sdxl_checkpoint: bool = False) -> dict[str, Path]:
    """Build the fixtures that are missing or stale; return their paths by name."""
    import_comfy()
    out.mkdir(parents=True, exist_ok=True)
    stamp_path = out / "fixtures.json"
    stamp = json.loads(stamp_path.read_text()) if stamp_path.is_file() else {}
    builders = {SD15_FILE: build_sd15, SDXL_UNET_FILE: build_sdxl_unet}
    if sdxl_checkpoint:
        builders[SDXL_CKPT_FILE] = build_sdxl_checkpoint
    paths = {}
    for name, build in builders.items():
        path = out / name
        if stamp.get(name) != BUILDER_VERSION or not _readable(path):
            build(out)
            stamp[name] = BUILDER_VERSION
            stamp_path.write_text(json.dumps(stamp, indent=1))
        paths[name] = path
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--sdxl-checkpoint", action="store_true", help="also build the large SDXL single-file checkpoint")
    args = parser.parse_args(argv)
    for name, path in ensure_fixtures(args.out_dir, args.sdxl_checkpoint).items():
        print(f"{name}: {path} ({path.stat().st_size / 1e6:.0f} MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
