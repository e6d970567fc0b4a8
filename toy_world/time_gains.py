"""Time-dependent gains of the toy UNet (docs/toy-world.md, "UNet (…)", multiplying by g(t), h(t)).

Output block 11's ResBlock writes the constant pairs ±S_A(t), ±S_B(t) whose spread makes the final
GroupNorm multiply by ``g = sqrt(σ² + 1)/σ`` and ``h = 1/σ``. ``time_embed`` and ``emb_layers``' swish
are kept linear by an offset, so ``emb_layers`` is a linear map of ComfyUI's sinusoidal timestep
features, fitted by weighted least squares.
"""
from __future__ import annotations

import math

import torch

from devkit.unet_configs import SD15_TINY

K_GAIN = 10.0
TIME_CONST = 1e6
TIME_GAIN = 0.05
TIME_OFFSET = 30.0
EMB_OFFSET = 30.0
RIDGE = 1e-5


def centre(conv) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero a conv and return its centre tap ``[out, in]`` and bias, to be set as a 1 × 1 map."""
    conv.weight.zero_()
    conv.bias.zero_()
    k = conv.weight.shape[-1] // 2
    return conv.weight[:, :, k, k], conv.bias


def time_gains(t: torch.Tensor) -> torch.Tensor:
    """``[S_A(t), S_B(t)]``: group spreads that make the final GroupNorm multiply by g(t), h(t)."""
    import comfy.model_sampling  # noqa: PLC0415 - ComfyUI is importable only after import_comfy()
    import comfy.supported_models  # noqa: PLC0415 - ComfyUI is importable only after import_comfy()

    ms = comfy.model_sampling.ModelSamplingDiscrete(comfy.supported_models.SD15(SD15_TINY))
    sigma = ms.sigma(t.float()).double()
    scale = K_GAIN * math.sqrt(5.0)
    return torch.stack([scale * sigma / torch.sqrt(sigma ** 2 + 1), scale * sigma], dim=1)


def wire_time(unet, z_channel: int, c_channel: int) -> None:
    """Timestep → ``emb`` (features ≈ the sinusoids + offset) → block 11's ResBlock writes ±S_A, ±S_B.

    ``time_embed`` and ``emb_layers``' swish are kept in their linear range by an offset, so
    ``emb_layers`` is a linear map of ComfyUI's sinusoidal features; it is fitted by weighted
    least squares (relative error) to :func:`time_gains` on a dense grid of timesteps.
    """
    from comfy.ldm.modules.diffusionmodules.openaimodel import timestep_embedding  # noqa: PLC0415 - ComfyUI is importable only after import_comfy()

    dim = unet.model_channels
    first, second = unet.time_embed[0], unet.time_embed[2]
    first.weight.zero_()
    first.weight[:dim, :dim] = torch.eye(dim)
    first.bias.fill_(EMB_OFFSET)
    second.weight.copy_(torch.eye(second.weight.shape[0]))
    second.bias.zero_()

    t = torch.cat([torch.linspace(0, 999, 20000), torch.linspace(0, 20, 4000)])
    feats = torch.nn.functional.silu(unet.time_embed(timestep_embedding(t, dim)))[:, :dim].double()
    design = torch.cat([feats, torch.ones(len(t), 1, dtype=torch.float64)], dim=1)
    targets = time_gains(t)
    res = unet.output_blocks[11][0]
    emb_linear = res.emb_layers[1]
    emb_linear.weight.zero_()
    emb_linear.bias.zero_()
    for i, ch in enumerate((2, 4)):
        y = targets[:, i]
        a = design / y[:, None]
        sol = torch.linalg.solve(a.T @ a + RIDGE * torch.eye(a.shape[1], dtype=torch.float64), a.T @ torch.ones_like(y))
        for sign, row in ((1.0, ch), (-1.0, ch + 1)):
            emb_linear.weight[row, :dim] = sign * sol[:-1].float()
            emb_linear.bias[row] = sign * float(sol[-1])

    _, in_bias = centre(res.in_layers[2])
    in_bias[0], in_bias[1] = TIME_CONST, -TIME_CONST
    norm = res.out_layers[0]
    norm.weight.zero_()
    norm.bias.zero_()
    spread = TIME_CONST / math.sqrt(5.0)   # the group's spread: ±TIME_CONST dominate
    w, b = centre(res.out_layers[3])
    for src, dst in ((2, z_channel), (4, c_channel)):
        norm.weight[src] = TIME_GAIN * spread
        norm.bias[src] = TIME_OFFSET
        w[dst, src], b[dst] = 1.0 / TIME_GAIN, -TIME_OFFSET / TIME_GAIN
        w[dst + 1, src], b[dst + 1] = -1.0 / TIME_GAIN, TIME_OFFSET / TIME_GAIN
