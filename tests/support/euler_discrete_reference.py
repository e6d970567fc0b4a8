"""diffusers' EulerDiscreteScheduler ("leading" spacing, offset 1, no churn), written independently
in the scheduler's own terms, for the Euler tests.

As docs/reference-parity.md ("Sampling") describes it: the timestep list, σ of each from the
cumulative alphas, ``init_noise_sigma = √(max σ² + 1)`` for leading spacing, the model input
``sample / √(σ² + 1)`` (``scale_model_input``), the ε-prediction's ``pred_original_sample`` and the
derivative step to the next σ, ending at σ = 0. Never calls the pack's sampler.
"""
from __future__ import annotations

from collections.abc import Callable

import torch

T = 1000


def euler_discrete_leading(noise: torch.Tensor, steps: int, alphas_cumprod: torch.Tensor,
                           eps: Callable[[torch.Tensor, int], torch.Tensor]) -> tuple[torch.Tensor, list[int]]:
    """The final sample (what the pipeline hands the VAE) and the timesteps, largest first."""
    ratio = T // steps
    timesteps = [k * ratio + 1 for k in range(steps)][::-1]
    sigma_of = ((1 - alphas_cumprod) / alphas_cumprod) ** 0.5
    sigmas = [sigma_of[t] for t in timesteps] + [torch.zeros((), dtype=alphas_cumprod.dtype)]
    init_noise_sigma = (max(sigmas) ** 2 + 1) ** 0.5
    sample = noise * init_noise_sigma
    for i, t in enumerate(timesteps):
        sigma = sigmas[i]
        model_output = eps(sample / (sigma ** 2 + 1) ** 0.5, t)
        pred_original_sample = sample - sigma * model_output
        derivative = (sample - pred_original_sample) / sigma
        sample = sample + derivative * (sigmas[i + 1] - sigma)
    return sample, timesteps
