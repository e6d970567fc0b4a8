"""diffusers' latent scale at the start and end of text-to-image sampling, in ComfyUI's σ-space.

ComfyUI hands a sampler ``x = σ0 · noise`` whenever the first noise level σ0 is below the model's
largest; diffusers' "leading" schedulers (the reference's PNDM for SD1.5 and Euler discrete for
SDXL) start from noise of standard deviation ``√(σ0² + 1)`` in the same units, 0.29 % more at
σ(981) ≈ 13.12. PNDM also stops at σ(t=0) ≠ 0 and diffusers decodes that latent times
``√ā_0 = 1/√(σ_end² + 1)`` (docs/reference-parity.md, "Sampling").
"""
from __future__ import annotations

import torch


def diffusers_start(x: torch.Tensor, sigma0: torch.Tensor) -> torch.Tensor:
    """ComfyUI's start ``σ0 · noise`` (pure noise, an empty latent) → diffusers' ``√(σ0² + 1) · noise``."""
    return x * ((sigma0 ** 2 + 1) ** 0.5 / sigma0)


def diffusers_result(x: torch.Tensor, sigma_end: torch.Tensor) -> torch.Tensor:
    """The last latent as diffusers decodes it, ``x / √(σ_end² + 1)`` (unchanged when σ_end = 0)."""
    return x / (sigma_end ** 2 + 1) ** 0.5
