"""Euler sampling with diffusers' Euler-discrete start: the reference's SDXL sampler in σ-space.

diffusers' ``EulerDiscreteScheduler`` (the SDXL pipeline's default, so the reference's SDXL
sampler) with ``s_churn = 0`` takes, in ComfyUI's unscaled ``x = x0 + σ ε``, the plain Euler step
``x ← x + (σ_next − σ)·(x − x̂0)/σ`` — the same update as ComfyUI's ``euler`` — and with "leading"
spacing and offset 1 it visits the timesteps ComfyUI's ``ddim_uniform`` scheduler gives (981, 961,
…, 1, then σ = 0 for 50 steps). What ComfyUI cannot express is the start: diffusers draws
``√(σ0² + 1)·noise`` where ComfyUI gives ``σ0·noise`` (:mod:`.diffusers_scaling`;
docs/reference-parity.md, "Sampling").
"""
from __future__ import annotations

from collections.abc import Callable

import torch

from .diffusers_scaling import diffusers_result, diffusers_start


@torch.no_grad()
def sample_euler(model: Callable[..., torch.Tensor], x: torch.Tensor, sigmas: torch.Tensor,
                 extra_args: dict | None = None, callback: Callable[[dict], None] | None = None,
                 disable: bool | None = None, diffusers_scaling: bool = False) -> torch.Tensor:
    """Euler steps with k-diffusion's sampler signature: ``model(x, σ)`` returns the denoised x0.

    ``len(sigmas) − 1`` steps and as many model evaluations. ``diffusers_scaling`` takes
    ``x = σ0 · noise`` (an empty latent) to diffusers' start and returns the last latent as
    diffusers decodes it (a no-op for schedules that end at σ = 0, as Euler discrete's do).
    """
    extra_args = {} if extra_args is None else extra_args
    if diffusers_scaling:
        x = diffusers_start(x, sigmas[0])
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = model(x, sigma * s_in, **extra_args)
        if callback is not None:
            callback({"x": x, "i": i, "sigma": sigma, "sigma_hat": sigma, "denoised": denoised})
        x = x + (sigma_next - sigma) * (x - denoised) / sigma
    return diffusers_result(x, sigmas[-1]) if diffusers_scaling else x
