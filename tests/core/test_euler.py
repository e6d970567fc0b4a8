"""Euler with diffusers' start in σ-space against diffusers' Euler discrete scheduler written
independently (``tests/support/euler_discrete_reference.py``)."""
from __future__ import annotations

import pytest
import torch

from psa_model.sampling.euler import sample_euler
from support.euler_discrete_reference import T, euler_discrete_leading
from support.pndm_reference import scaled_linear_alphas_cumprod


def _toy_eps(x: torch.Tensor, t: int) -> torch.Tensor:
    """A fixed ε-model: a linear map of the DDPM latent plus a timestep-dependent term."""
    gen = torch.Generator().manual_seed(11)
    a = torch.randn(x.shape[-1], x.shape[-1], generator=gen, dtype=torch.float64) * 0.3
    b = torch.randn(x.shape[-1], generator=gen, dtype=torch.float64)
    return x @ a.T * (1.0 + t / T) + b * torch.sin(torch.tensor(t / 250.0, dtype=torch.float64))


def _run(steps: int, diffusers_scaling: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[int]]:
    ac = scaled_linear_alphas_cumprod()
    table = ((1 - ac) / ac) ** 0.5
    ratio = T // steps
    timesteps = torch.arange(steps - 1, -1, -1) * ratio + 1  # what ComfyUI's ddim_uniform picks (host test)
    sigmas = torch.cat([table[timesteps], table.new_zeros(1)])
    noise = torch.randn(3, 4, generator=torch.Generator().manual_seed(steps), dtype=torch.float64)
    calls = []

    def model(x, sigma):  # ComfyUI's contract: σ-space x in, denoised x0 out
        s = sigma[0]
        t = int(torch.argmin((table - s).abs()))
        calls.append(t)
        return x - s * _toy_eps(x / (1 + s ** 2) ** 0.5, t)

    out = sample_euler(model, noise * sigmas[0], sigmas, diffusers_scaling=diffusers_scaling)
    return out, noise, ac, calls


def _first_timestep(steps: int) -> int:
    return (steps - 1) * (T // steps) + 1


@pytest.mark.parametrize("steps", [50, 7, 1])
def test_diffusers_scaling_replays_euler_discrete_from_the_same_noise(steps):
    out, noise, ac, calls = _run(steps, diffusers_scaling=True)
    expected, timesteps = euler_discrete_leading(noise, steps, ac, _toy_eps)
    assert calls == timesteps
    torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("steps", [50, 7])
def test_comfyui_scaling_is_euler_discrete_from_noise_smaller_by_the_start_ratio(steps):
    """ComfyUI's σ0·noise start is diffusers' √(σ0²+1)·noise' for noise' = noise·σ0/√(σ0²+1)."""
    out, noise, ac, _ = _run(steps, diffusers_scaling=False)
    sigma0 = ((1 - ac[_first_timestep(steps)]) / ac[_first_timestep(steps)]) ** 0.5
    expected, _ = euler_discrete_leading(noise * sigma0 / (sigma0 ** 2 + 1) ** 0.5, steps, ac, _toy_eps)
    torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-10)
    same_noise, _ = euler_discrete_leading(noise, steps, ac, _toy_eps)
    assert not torch.allclose(out, same_noise, rtol=1e-6, atol=1e-6)  # the 0.29 % start difference shows
