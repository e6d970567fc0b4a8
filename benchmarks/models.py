"""Models for the benchmarks: ComfyUI UNets with random weights, conditioning, the PSA variants.

- :func:`sd15_unet`: an SD1.5-layout UNet (SD1.5's 16 cross-attention sites and block names)
  built with ComfyUI's own model classes; ``channels=320, mult=(1, 2, 4, 4)`` is the full-size
  SD1.5 UNet (860 M parameters), smaller widths keep the scaling grid within budget.
- :func:`fixture_model`: the tiny SD1.5 / SDXL test fixtures (``devkit/fixtures.py``).
- :func:`meta_unet`: a full-size SD1.5 or SDXL UNet on the ``meta`` device (shapes, no memory),
  enough to patch an adapter onto it (patching reads only the ``attn2`` widths).
- :func:`psa_model` / :func:`reference_style_model`: the variants sampled side by side. The
  reference-style peer computes what the reference's attention processors compute (an extra
  softmax attention of every cross-attention layer's queries over the user tokens, with that
  layer's ``to_k_user``/``to_v_user`` applied at every call); see ``docs/benchmarks.md``.
"""
from __future__ import annotations

import copy
from pathlib import Path

import torch

from devkit.fixtures import ensure_fixtures, fill_parameters
from devkit.random_adapters import random_adapter, random_embeddings
from devkit.unet_configs import SD15_FULL, SDXL_FULL, sd15_config
from psa_model.adapter.layer_map import architecture, match_sites
from psa_model.adapter.modules import REFERENCE_EMBED_DIM, PSAAdapter, adapter_config_for_model
from psa_model.adapter.patch import attach_adapter, attach_profile

REPO_ROOT = Path(__file__).resolve().parent.parent


def _patcher(model_config_cls, unet_config: dict, device: str | None = None, seed: int = 0):
    import comfy.model_management  # noqa: PLC0415 - ComfyUI is importable only after import_comfy()
    import comfy.model_patcher  # noqa: PLC0415 - ComfyUI is importable only after import_comfy()

    config = model_config_cls(copy.deepcopy(unet_config))
    config.set_inference_dtype(torch.float32, None)
    model = config.get_model({}, device=device)
    if device != "meta":
        fill_parameters(model.diffusion_model, seed=seed)
    model.diffusion_model.eval()
    cpu = torch.device("cpu")
    return comfy.model_patcher.ModelPatcher(model, load_device=comfy.model_management.get_torch_device(),
                                            offload_device=cpu)


def sd15_unet(channels: int = 320, mult: tuple[int, ...] = (1, 2, 4, 4), seed: int = 0):
    """A ComfyUI ``ModelPatcher`` of an SD1.5-layout UNet with random weights (fp32, CPU)."""
    import comfy.supported_models  # noqa: PLC0415 - ComfyUI is importable only after import_comfy()

    return _patcher(comfy.supported_models.SD15, sd15_config(channels, mult),
                    seed=seed)


def meta_unet(arch: str):
    """A full-size SD1.5 or SDXL UNet on the ``meta`` device: real shapes, no weights."""
    import comfy.supported_models  # noqa: PLC0415 - ComfyUI is importable only after import_comfy()

    if arch == "sd15":
        return _patcher(comfy.supported_models.SD15, SD15_FULL,
                        device="meta")
    return _patcher(comfy.supported_models.SDXL, SDXL_FULL, device="meta")


def fixture_model(name: str):
    """The tiny SD1.5 checkpoint's or the tiny SDXL UNet's ``ModelPatcher`` (built if missing)."""
    import comfy.sd  # noqa: PLC0415 - ComfyUI is importable only after import_comfy()

    paths = ensure_fixtures(REPO_ROOT / ".cache" / "fixtures")
    if name == "sd15":
        return comfy.sd.load_checkpoint_guess_config(str(paths["sd15_tiny.safetensors"]), output_vae=False,
                                                     output_clip=False)[0]
    return comfy.sd.load_diffusion_model(str(paths["sdxl_tiny_unet.safetensors"]), model_options={"dtype": torch.float32})


def conditioning(arch: str, seed: int = 7) -> tuple[list, list]:
    """Random positive / negative conditioning in ComfyUI's format (CLIP-shaped)."""
    gen = torch.Generator().manual_seed(seed)
    width = 768 if arch == "sd15" else 2048
    extra = {} if arch == "sd15" else {"pooled_output": torch.randn(1, 1280, generator=gen)}
    return ([[torch.randn(1, 77, width, generator=gen), dict(extra)]],
            [[torch.randn(1, 77, width, generator=gen), dict(extra)]])


def adapter_for(model, arch: str, user_tokens: int = 1, seed: int = 3) -> PSAAdapter:
    """A random adapter whose layer widths are the model's (reference embedding size 3584)."""
    sites = match_sites(architecture(arch), model.get_model_object("diffusion_model"))
    return random_adapter(adapter_config_for_model(arch, sites, embed_dim=REFERENCE_EMBED_DIM, user_tokens=user_tokens),
                          seed=seed)


def profiles(count: int, seed: int = 5) -> torch.Tensor:
    return random_embeddings(count, REFERENCE_EMBED_DIM, seed=seed)


def psa_model(base, adapter: PSAAdapter, embeddings: torch.Tensor, scale: float = 1.0):
    """The node path: PSA Model Patcher then PSA Apply Profile."""
    return attach_profile(attach_adapter(base, adapter), embeddings, scale)


def reference_style_model(base, adapter: PSAAdapter, embeddings: torch.Tensor, scale: float = 1.0):
    """A clone of ``base`` whose every ``attn2`` computes ``Attn(q,K,V) + s·Attn(q, K_user, V_user)``.

    This is the reference's processor: the user keys/values come from ``to_k_user``/``to_v_user``
    applied to the user tokens inside every layer call, and the second attention is a real
    softmax attention (ComfyUI's own attention function, as for the text term) even for T = 1.
    """
    import comfy.ldm.modules.attention as comfy_attention  # noqa: PLC0415 - ComfyUI is importable only after import_comfy()

    arch = adapter.config.arch
    sites = match_sites(architecture(arch), base.get_model_object("diffusion_model"))
    with torch.no_grad():
        user_tokens = adapter.project(embeddings.float())
        null_tokens = adapter.null_tokens()
    m = base.clone()
    for layer, site in zip(adapter.layers, sites):

        def replace(q, k, v, extra_options, layer=layer):
            heads = extra_options["n_heads"]
            chunks = extra_options["cond_or_uncond"]
            per = q.shape[0] // len(chunks)
            rows = []
            for kind in chunks:
                t = user_tokens if kind == 0 else null_tokens
                rows.append(t.expand(per, -1, -1) if t.shape[0] == 1 else t)
            tokens = torch.cat(rows).to(q.dtype)
            k_user, v_user = layer.to_k_user(tokens), layer.to_v_user(tokens)
            text = comfy_attention.optimized_attention(q, k, v, heads)
            return text + scale * comfy_attention.optimized_attention(q, k_user, v_user, heads)

        m.set_model_attn2_replace(replace, *site.key)
    return m
