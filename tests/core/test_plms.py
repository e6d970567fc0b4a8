"""PLMS in σ-space against PNDM (skip_prk_steps) written independently in DDPM alpha-space.

The reference below follows diffusers' PNDMScheduler as docs/reference-parity.md ("Sampling")
describes it: "leading" timesteps with offset 1, the step list that repeats the second
timestep, its counter-driven start and Adams–Bashforth orders, and the transfer formula (PNDM
paper, equation 9) with the final alpha ``ā_0``. It never calls the code under test.
"""
from __future__ import annotations

import pytest
import torch

from psa_model.sampling.plms import plms_sigmas, sample_plms

T = 1000


def _alphas_cumprod() -> torch.Tensor:
    betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, T, dtype=torch.float64) ** 2  # scaled linear
    return torch.cumprod(1.0 - betas, dim=0)


def _toy_eps(x: torch.Tensor, t: int) -> torch.Tensor:
    """A fixed ε-model: a linear map of the DDPM latent plus a timestep-dependent term."""
    gen = torch.Generator().manual_seed(7)
    a = torch.randn(x.shape[-1], x.shape[-1], generator=gen, dtype=torch.float64) * 0.3
    b = torch.randn(x.shape[-1], generator=gen, dtype=torch.float64)
    return x @ a.T * (1.0 + t / T) + b * torch.cos(torch.tensor(t / 300.0, dtype=torch.float64))


def _pndm_reference(noise: torch.Tensor, steps: int, ac: torch.Tensor) -> tuple[torch.Tensor, list[int], int]:
    """PNDM with skip_prk_steps in alpha-space; returns the final latent, the step timesteps, the model calls."""
    ratio = T // steps
    leading = [k * ratio + 1 for k in range(steps)]
    run = (leading[:-1] + leading[-2:-1] + leading[-1:])[::-1]  # the second timestep appears twice
    final_alpha = ac[0]

    def transfer(x, t, t_prev, e):
        a_t = ac[t]
        a_prev = ac[t_prev] if t_prev >= 0 else final_alpha
        denom = a_t * (1 - a_prev) ** 0.5 + (a_t * (1 - a_t) * a_prev) ** 0.5
        return (a_prev / a_t) ** 0.5 * x - (a_prev - a_t) * e / denom

    x, ets, held, calls = noise.clone(), [], None, 0
    for counter, t in enumerate(run):
        e = _toy_eps(x, t)
        calls += 1
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
    return x, sorted(set(run), reverse=True), calls


@pytest.mark.parametrize("steps", [50, 7, 2, 1])
def test_plms_matches_pndm_skip_prk(steps):
    ac = _alphas_cumprod()
    table = ((1 - ac) / ac) ** 0.5
    noise = torch.randn(3, 4, generator=torch.Generator().manual_seed(steps), dtype=torch.float64)
    expected, timesteps, ref_calls = _pndm_reference(noise, steps, ac)

    sigmas = plms_sigmas(table, steps)
    assert sigmas.tolist() == table[timesteps].tolist() + [table[0].item()]
    calls = []

    def model(x, sigma):  # ComfyUI's contract: σ-space x in, denoised x0 out
        s = sigma[0]
        t = int(torch.argmin((table - s).abs()))
        assert table[t] == s
        calls.append(t)
        return x - s * _toy_eps(x / (1 + s ** 2) ** 0.5, t)

    x = noise * (1 + sigmas[0] ** 2) ** 0.5  # diffusers' x_T = noise is this in σ-space
    out = sample_plms(model, x, sigmas)
    got = out / (1 + sigmas[-1] ** 2) ** 0.5  # back to the DDPM latent at ā_0
    assert len(calls) == ref_calls == steps + (steps > 1)
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)


def test_leading_schedule_timesteps():
    ac = _alphas_cumprod()
    table = ((1 - ac) / ac) ** 0.5
    sigmas = plms_sigmas(table, 50)
    picked = [int(torch.argmin((table - s).abs())) for s in sigmas]
    assert picked == list(range(981, 0, -20)) + [0]
    with pytest.raises(ValueError, match="fewer steps"):
        plms_sigmas(table, 1000)
