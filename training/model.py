"""The base model through ComfyUI's own code, and the PSA noise prediction used for training.

``docs/reference-parity.md`` ("The adapter", "Training"). The trainer never re-implements the PSA layer:
it installs :mod:`psa_model.adapter.patch` with :func:`psa_model.adapter.patch.attach_adapter` exactly as the
nodes do and passes a differentiable :class:`psa_model.adapter.patch.UserConditioning` through
``transformer_options``.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import torch

from psa_model.adapter.modules import PSAAdapter, adapter_config_for_model
from psa_model.formats.adapter_file import config_from_tensors, read_adapter_tensors
from psa_model.adapter.layer_map import architecture, match_sites
from psa_model.adapter.patch import USER_KEY, UserConditioning, attach_adapter

from .comfy_host import import_comfy


NATIVE_RESOLUTION = {"sd15": 512, "sdxl": 1024}  # the image side each architecture was trained at


class ModelMismatchError(ValueError):
    """An adapter or data set does not fit the base model (e.g. an SD1.5 adapter on SDXL)."""


@dataclass
class BaseModel:
    """A ComfyUI checkpoint: MODEL (ModelPatcher), CLIP, VAE and the detected PSA architecture."""

    model: object
    clip: object
    vae: object
    arch: str


def detect_arch(model_patcher) -> str:
    """"sdxl" for ComfyUI's SDXL model class, "sd15" for an SD1.5-layout UNet; else an error."""
    import_comfy()
    import comfy.model_base  # noqa: PLC0415

    inner = model_patcher.model
    name = "sdxl" if isinstance(inner, comfy.model_base.SDXL) else "sd15"
    try:
        match_sites(architecture(name), model_patcher.get_model_object("diffusion_model"))
    except ValueError as exc:
        raise ModelMismatchError(f"the checkpoint ({type(inner).__name__}) is not a PSA base model: {exc}") from None
    return name


def load_base(checkpoint: str | Path) -> BaseModel:
    """Load a single-file checkpoint with ``comfy.sd.load_checkpoint_guess_config`` (fp32 weights)."""
    import_comfy()
    import comfy.sd  # noqa: PLC0415

    path = Path(checkpoint)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} not found")
    try:
        model, clip, vae, _ = comfy.sd.load_checkpoint_guess_config(
            str(path), output_vae=True, output_clip=True, model_options={"dtype": torch.float32})
    except (MemoryError, KeyboardInterrupt):
        raise
    except Exception as exc:  # noqa: BLE001 - ComfyUI/torch's text may advise unsafe loading (weights_only)
        raise ModelMismatchError(f"{path.name}: ComfyUI cannot load it as a checkpoint ({exc.__class__.__name__}); "
                                 "give the model's .safetensors file (a pickled .ckpt holding code is never "
                                 "loaded)") from None
    if clip is None or vae is None:
        raise ModelMismatchError(f"{path.name} has no text encoder or VAE; training needs a full checkpoint")
    return BaseModel(model, clip, vae, detect_arch(model))


def build_adapter(model_patcher, arch: str, embed_dim: int, user_tokens: int = 1,
                  warm_start: str | Path | None = None, seed: int = 0) -> PSAAdapter:
    """A trainable adapter for this UNet: zero-init ``to_k/to_v``, or a warm start.

    The adapter's layout: ``docs/reference-parity.md``, "The adapter".

    Warm start files may be native or reference format; their architecture, layer widths and
    embedding size must match this model and data set. The user projection's random init
    is drawn from ``seed`` (not the global RNG), so two runs with the same config start equal.
    """
    sites = match_sites(architecture(arch), model_patcher.get_model_object("diffusion_model"))
    config = adapter_config_for_model(arch, sites, embed_dim=embed_dim, user_tokens=user_tokens)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        adapter = PSAAdapter(config)
    if warm_start is not None:
        tensors, meta = read_adapter_tensors(warm_start)
        file_cfg = config_from_tensors(tensors, meta)
        if file_cfg.arch != arch:
            raise ModelMismatchError(f"warm-start adapter {Path(warm_start).name} is a {file_cfg.arch} adapter "
                                     f"but the base checkpoint is {arch}: use an adapter trained for {arch}")
        if file_cfg.layer_dims != config.layer_dims:
            raise ModelMismatchError(f"warm-start adapter layer widths {file_cfg.layer_dims} do not match this "
                                     f"UNet's cross-attention widths {config.layer_dims}")
        if file_cfg.embed_dim != embed_dim:
            raise ModelMismatchError(f"warm-start adapter expects {file_cfg.embed_dim}-d embeddings, the data "
                                     f"set has {embed_dim}-d embeddings")
        if file_cfg.user_tokens != user_tokens:
            raise ModelMismatchError(f"warm-start adapter has {file_cfg.user_tokens} user tokens, "
                                     f"--user-tokens is {user_tokens}")
        if (file_cfg.user_attention, file_cfg.user_groups) != (config.user_attention, config.user_groups):
            raise ModelMismatchError(
                f"warm-start adapter uses {file_cfg.user_attention} user attention with {file_cfg.user_groups} "
                f"group(s); training uses {config.user_attention} with {config.user_groups} (docs/user-tokens.md)")
        adapter.load_state_dict({k: v.float() for k, v in tensors.items()}, strict=True)
    return adapter.float().train().requires_grad_(True)


def keep_projection_in_bf16(adapter: PSAAdapter) -> None:
    """Store and update the user projection in bf16, as the reference does under bf16 mixed precision.

    The reference casts its projection module to bf16 and its optimiser updates the bf16
    weights directly, so at lr 5e-6 most updates are smaller than half a bf16 step and round
    away (``docs/reference-parity.md``, "User projection precision"). The projected tokens are
    returned as float32 so the fp32 per-layer key/value projections accept them with or
    without autocast; the projection's own arithmetic, weights, gradients and optimiser state
    are bf16.
    """
    adapter.user_proj.to(torch.bfloat16)
    adapter.user_proj.register_forward_hook(lambda _module, _inputs, output: output.float())


def patch_model(model_patcher, adapter: PSAAdapter):
    """The ModelPatcher clone with the shared PSA layers (same call the PSA Model Patcher node makes)."""
    import_comfy()
    import comfy.model_management as mm  # noqa: PLC0415

    patched = attach_adapter(model_patcher, adapter)
    mm.load_models_gpu([patched])
    patched.model.diffusion_model.requires_grad_(False)
    return patched


def predict_eps(patched, x_noisy: torch.Tensor, sigma: torch.Tensor, conds: dict[str, torch.Tensor],
                user: UserConditioning, checkpointing: bool = False) -> torch.Tensor:
    """ε prediction of the patched UNet through ComfyUI's ``BaseModel.apply_model``.

    ``apply_model`` returns the denoised x0 (``x − σ·ε`` for ε-models), so
    ``ε = (x_noisy − denoised) / σ`` — the quantity the reference loss compares with the noise
    (``docs/reference-parity.md``, "Training": ``mse = mean (ε_pred − ε)²``). All rows are conditional
    (``cond_or_uncond=[0]``), row i using profile i of ``user``.
    """
    options = dict(patched.model_options.get("transformer_options", {}))
    options[USER_KEY] = user
    options["cond_or_uncond"] = [0]
    options["sigmas"] = sigma
    model = patched.model
    device = model.device if hasattr(model, "device") else x_noisy.device
    x_noisy, sigma = x_noisy.to(device), sigma.to(device)
    kwargs = {k: v.to(device) for k, v in conds.items()}

    def run(x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        return model.apply_model(x, s, transformer_options=options, **kwargs)

    if checkpointing and torch.is_grad_enabled():
        denoised = torch.utils.checkpoint.checkpoint(run, x_noisy, sigma, use_reentrant=False)
    else:
        denoised = run(x_noisy, sigma)
    return (x_noisy - denoised) / sigma.reshape(-1, *([1] * (x_noisy.ndim - 1)))


class Bf16ReferenceUNet:
    """The DPO reference branch computed the way the reference implementation computes it.

    ``docs/reference-parity.md``, "Precision of the reference branch": the reference keeps its
    frozen reference UNet in bf16 outside mixed-precision autocast and feeds it bf16 latents,
    noise and text states, so its noise prediction (and the error taken from it) is a bf16
    number. Here a bf16 copy of the base diffusion model (the patched model's own module is not
    touched) is called with ComfyUI's input scaling and timestep, every input rounded to bf16;
    the adapter is absent, which is what the reference's zero-initialised adapter computes.
    """

    def __init__(self, patched) -> None:
        self.sampling = patched.get_model_object("model_sampling")
        self.unet = copy.deepcopy(patched.get_model_object("diffusion_model")).to(torch.bfloat16)
        self.unet.requires_grad_(False)
        if hasattr(self.unet, "dtype"):  # ComfyUI's UNet casts its time embedding to this
            self.unet.dtype = torch.bfloat16

    @torch.no_grad()
    def predict_eps(self, x_noisy: torch.Tensor, sigma: torch.Tensor, conds: dict[str, torch.Tensor]) -> torch.Tensor:
        """bf16 ε prediction for the inputs :func:`predict_eps` takes (no user conditioning)."""
        device = next(self.unet.parameters()).device
        x, s = x_noisy.to(device), sigma.to(device)
        x_in = self.sampling.calculate_input(s, x).to(torch.bfloat16)
        kwargs = {("context" if k == "c_crossattn" else k): v.to(device, torch.bfloat16) for k, v in conds.items()}
        return self.unet(x_in, self.sampling.timestep(s).float(), transformer_options={}, **kwargs)
