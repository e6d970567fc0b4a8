"""Pseudo linear multistep (PLMS) sampling and its "leading" schedule, in ComfyUI's σ-space.

PLMS is the PNDM method of Liu et al. (arXiv 2202.09778) without its Runge–Kutta warm-up; it is
diffusers' default SD1.5 scheduler and so the reference's SD1.5 sampler (docs/reference-parity.md,
"Sampling"). For an ε-prediction model a DDPM latent ``x_t`` at cumulative alpha ``ā_t`` is
``√ā_t · (x0 + σ_t ε)`` with ``σ_t = √((1 − ā_t)/ā_t)``: PNDM's transfer step (the paper's
equation 9, with ``√ā`` in its denominator) is the deterministic DDIM step, which in ComfyUI's
unscaled ``x = x0 + σ ε`` is an Euler step ``x ← x + (σ_next − σ) · ε̂``. PLMS differs from other
Adams–Bashforth samplers only in what ``ε̂`` is on each step:

- step 1: ``ε0`` at the start, one Euler step to ``σ1``, a second noise prediction ``ε'`` there,
  and the step taken again from the start with ``(ε0 + ε')/2`` (one extra model evaluation);
- later steps: the Adams–Bashforth combination of the stored predictions (``ε0`` and one new
  prediction per step; ``ε'`` is not stored) of order 2, 3, then 4:
  ``(3e₁ − e₂)/2``, ``(23e₁ − 16e₂ + 5e₃)/12``, ``(55e₁ − 59e₂ + 37e₃ − 9e₄)/24`` (newest first).

The schedule (:func:`plms_sigmas`) has diffusers' "leading" spacing with a step offset: timesteps
``offset + k·⌊T/steps⌋`` for ``k = steps−1 … 0``, then the last step ends at the noise level of
the first training timestep (``σ(t=0)``, diffusers' ``set_alpha_to_one=False``) rather than at 0.
"""
from __future__ import annotations

from collections.abc import Callable

import torch

from .diffusers_scaling import diffusers_result, diffusers_start

_AB = {  # Adams–Bashforth weights for 1…4 stored predictions, newest first
    1: (1.0,),
    2: (3 / 2, -1 / 2),
    3: (23 / 12, -16 / 12, 5 / 12),
    4: (55 / 24, -59 / 24, 37 / 24, -9 / 24),
}


def plms_sigmas(sigma_table: torch.Tensor, steps: int, steps_offset: int = 1) -> torch.Tensor:
    """The PLMS schedule of ``steps`` steps from a model's per-timestep sigma table (σ(t), t = 0…T−1).

    Returns ``steps + 1`` descending sigmas: σ at the leading timesteps ``steps_offset + k·⌊T/steps⌋``
    (largest first), then σ(0), where the reference's last step stops (module docstring).
    """
    table = sigma_table.flatten()
    count = table.numel()
    if steps < 1:
        raise ValueError(f"PLMS needs at least 1 step, got {steps}")
    ratio = count // steps
    last = steps_offset + (steps - 1) * ratio
    if ratio < 1 or last >= count or steps_offset < 0:
        raise ValueError(f"{steps} PLMS steps with offset {steps_offset} do not fit the model's {count} timesteps "
                         f"(the first would be timestep {last}); use fewer steps")
    timesteps = torch.arange(steps - 1, -1, -1) * ratio + steps_offset
    return torch.cat([table[timesteps], table[:1]])


def _combined(history: list[torch.Tensor]) -> torch.Tensor:
    weights = _AB[len(history)]
    out = weights[0] * history[-1]
    for k, weight in enumerate(weights[1:], start=2):
        out = out + weight * history[-k]
    return out


@torch.no_grad()
def sample_plms(model: Callable[..., torch.Tensor], x: torch.Tensor, sigmas: torch.Tensor,
                extra_args: dict | None = None, callback: Callable[[dict], None] | None = None,
                disable: bool | None = None, diffusers_scaling: bool = False) -> torch.Tensor:
    """PLMS (module docstring) with k-diffusion's sampler signature: ``model(x, σ)`` returns the denoised x0.

    ``len(sigmas) − 1`` steps and ``len(sigmas)`` model evaluations (one extra on the first step,
    none when there is a single step). ``diffusers_scaling`` takes ``x = σ0 · noise`` (pure noise,
    an empty latent) to diffusers' start ``√(σ0² + 1) · noise`` and returns the last latent as
    diffusers decodes it, ``x / √(σ_end² + 1)`` (docs/reference-parity.md, "Sampling").
    """
    extra_args = {} if extra_args is None else extra_args
    if diffusers_scaling:
        x = diffusers_start(x, sigmas[0])
    s_in = x.new_ones([x.shape[0]])
    history: list[torch.Tensor] = []

    def eps(sample: torch.Tensor, sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        denoised = model(sample, sigma * s_in, **extra_args)
        return (sample - denoised) / sigma, denoised

    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        e, denoised = eps(x, sigma)
        if callback is not None:
            callback({"x": x, "i": i, "sigma": sigma, "sigma_hat": sigma, "denoised": denoised})
        history = (history + [e])[-4:]
        if i == 0 and len(sigmas) > 2:  # second-order start: average with a prediction at the next level
            e_next, _ = eps(x + (sigma_next - sigma) * e, sigma_next)
            step = (e + e_next) / 2
        else:
            step = _combined(history)
        x = x + (sigma_next - sigma) * step
    return diffusers_result(x, sigmas[-1]) if diffusers_scaling else x
