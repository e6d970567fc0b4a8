"""PLMS in σ-space against PNDM (skip_prk_steps) written independently in DDPM alpha-space.

The reference is ``tests/support/pndm_reference.py``; it never calls the code under test.
"""
from __future__ import annotations

import pytest
import torch

from psa_model.sampling.plms import plms_sigmas, sample_plms
from support.pndm_reference import T, pndm_skip_prk, scaled_linear_alphas_cumprod


def _toy_eps(x: torch.Tensor, t: int) -> torch.Tensor:
    """A fixed ε-model: a linear map of the DDPM latent plus a timestep-dependent term."""
    gen = torch.Generator().manual_seed(7)
    a = torch.randn(x.shape[-1], x.shape[-1], generator=gen, dtype=torch.float64) * 0.3
    b = torch.randn(x.shape[-1], generator=gen, dtype=torch.float64)
    return x @ a.T * (1.0 + t / T) + b * torch.cos(torch.tensor(t / 300.0, dtype=torch.float64))


@pytest.mark.parametrize("steps, diffusers_scaling", [(50, False), (7, False), (2, False), (1, False), (50, True),
                                                      (7, True)])
def test_plms_matches_pndm_skip_prk(steps, diffusers_scaling):
    ac = scaled_linear_alphas_cumprod()
    table = ((1 - ac) / ac) ** 0.5
    noise = torch.randn(3, 4, generator=torch.Generator().manual_seed(steps), dtype=torch.float64)
    expected, timesteps, ref_calls = pndm_skip_prk(noise, steps, ac, _toy_eps)

    sigmas = plms_sigmas(table, steps)
    assert sigmas.tolist() == table[timesteps].tolist() + [table[0].item()]
    calls = []

    def model(x, sigma):  # ComfyUI's contract: σ-space x in, denoised x0 out
        s = sigma[0]
        t = int(torch.argmin((table - s).abs()))
        assert table[t] == s
        calls.append(t)
        return x - s * _toy_eps(x / (1 + s ** 2) ** 0.5, t)

    if diffusers_scaling:  # ComfyUI's start for an empty latent below σ_max; the DDPM latent comes out
        got = sample_plms(model, noise * sigmas[0], sigmas, diffusers_scaling=True)
    else:  # diffusers' x_T = noise is √(σ² + 1)·noise in σ-space; σ-space out, back to the DDPM latent at ā_0
        got = sample_plms(model, noise * (1 + sigmas[0] ** 2) ** 0.5, sigmas) / (1 + sigmas[-1] ** 2) ** 0.5
    assert calls == ref_calls and len(calls) == steps + (steps > 1)
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)


def test_leading_schedule_timesteps():
    ac = scaled_linear_alphas_cumprod()
    table = ((1 - ac) / ac) ** 0.5
    sigmas = plms_sigmas(table, 50)
    picked = [int(torch.argmin((table - s).abs())) for s in sigmas]
    assert picked == list(range(981, 0, -20)) + [0]
    with pytest.raises(ValueError, match="fewer steps"):
        plms_sigmas(table, 1000)
