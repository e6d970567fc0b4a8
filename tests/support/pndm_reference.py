"""PNDM with skip_prk_steps (PLMS), written independently in DDPM alpha-space, for the PLMS tests.

Follows diffusers' PNDMScheduler as docs/reference-parity.md ("Sampling") describes it: "leading"
timesteps with offset 1, the step list that repeats the second timestep, its counter-driven
start and Adams–Bashforth orders, and the transfer formula (PNDM paper, equation 9) with the
final alpha ``ā_0``. Never calls the pack's sampler.
"""
from __future__ import annotations

from collections.abc import Callable

import torch

T = 1000


def scaled_linear_alphas_cumprod() -> torch.Tensor:
    """SD1.5's ``ā_t``: scaled-linear betas 0.00085 … 0.012 over 1000 steps (float64)."""
    betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, T, dtype=torch.float64) ** 2
    return torch.cumprod(1.0 - betas, dim=0)


def pndm_skip_prk(noise: torch.Tensor, steps: int, alphas_cumprod: torch.Tensor,
                  eps: Callable[[torch.Tensor, int], torch.Tensor]) -> tuple[torch.Tensor, list[int], list[int]]:
    """The final DDPM latent, the distinct step timesteps (descending) and the timestep of each model call."""
    ratio = T // steps
    leading = [k * ratio + 1 for k in range(steps)]
    run = (leading[:-1] + leading[-2:-1] + leading[-1:])[::-1]  # the second timestep appears twice
    ac = alphas_cumprod

    def transfer(x, t, t_prev, e):
        a_t = ac[t]
        a_prev = ac[t_prev] if t_prev >= 0 else ac[0]
        denom = a_t * (1 - a_prev) ** 0.5 + (a_t * (1 - a_t) * a_prev) ** 0.5
        return (a_prev / a_t) ** 0.5 * x - (a_prev - a_t) * e / denom

    x, ets, held = noise.clone(), [], None
    for counter, t in enumerate(run):
        e = eps(x, t)
        t_prev = t - ratio
        if counter == 1:
            t, t_prev = t + ratio, t
        else:
            ets = ets[-3:] + [e]
        if counter == 0:
            held = x
        elif counter == 1:
            e, x = (e + ets[-1]) / 2, held
        elif len(ets) == 2:
            e = (3 * ets[-1] - ets[-2]) / 2
        elif len(ets) == 3:
            e = (23 * ets[-1] - 16 * ets[-2] + 5 * ets[-3]) / 12
        else:
            e = (55 * ets[-1] - 59 * ets[-2] + 37 * ets[-3] - 9 * ets[-4]) / 24
        x = transfer(x, t, t_prev, e)
    return x, sorted(set(run), reverse=True), run
