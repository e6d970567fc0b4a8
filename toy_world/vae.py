"""A hand-set SD VAE: encode = 8× average pooling, decode = 8× nearest upsampling (docs/toy-world.md).

ComfyUI's own ``AutoencoderKL`` (the SD1.5 VAE architecture) with weights chosen, not trained:

- every residual block's convolutions and every attention block's output projection are zero,
  so those blocks pass their input through unchanged;
- ``conv_in``, shortcuts and up/down-sampling convolutions copy channels (downsampling as a
  2 × 2 mean, upsampling as nearest-neighbour + a centre-tap copy);
- the only non-linear step left is the final GroupNorm + swish of encoder and decoder. Each
  colour channel ``x`` travels beside a constant channel ``A`` and its negative ``-x`` in the
  same normalisation group, so the group's mean is a fixed ``A``-multiple and its spread is
  dominated by ``A``: the GroupNorm becomes a fixed affine map (error ~1e-3), whose scale and
  shift we undo; an offset of +12 keeps swish in its almost-linear range.

Latent channels 0–2 carry R, G, B in [-1, 1] (times 1/0.18215, SD1.5's latent scale, so the
UNet sees [-1, 1]); channel 3 is zero.
"""
from __future__ import annotations

import torch

from devkit.unet_configs import VAE_CONFIG

A = 40.0          # the constant companion channel
OFFSET = 12.0     # keeps swish(x + OFFSET) ≈ x + OFFSET
LATENT_SCALE = 0.18215


def _identity_conv(weight: torch.Tensor, taps: list[tuple[int, int]], value: float) -> None:
    n = min(weight.shape[0], weight.shape[1])
    idx = torch.arange(n)
    for ky, kx in taps:
        weight[idx, idx, ky, kx] = value


def _layout(weight: torch.Tensor, bias: torch.Tensor, scale: float, ky: int, kx: int) -> None:
    """Input channel k → output channels 4k (x·scale), 4k+1 (A), 4k+2 (−x·scale)."""
    for k in range(3):
        weight[4 * k, k, ky, kx] = scale
        weight[4 * k + 2, k, ky, kx] = -scale
        bias[4 * k + 1] = A


def build_vae_state_dict() -> dict[str, torch.Tensor]:
    """State dict of ComfyUI's ``AutoencoderKL`` (SD VAE config) with the hand-set weights."""
    from comfy.ldm.models.autoencoder import AutoencoderKL  # noqa: PLC0415 - ComfyUI is importable only after import_comfy()

    ae = AutoencoderKL(ddconfig=VAE_CONFIG, embed_dim=4)
    with torch.no_grad():
        for name, p in ae.named_parameters():
            is_norm = "norm" in name.rsplit(".", 2)[-2]
            p.fill_(1.0 if (is_norm and name.endswith("weight")) else 0.0)
        params = dict(ae.named_parameters())
        for name, p in params.items():
            if not name.endswith("weight") or p.ndim != 4:
                continue
            if ".downsample.conv" in name:
                _identity_conv(p, [(0, 0), (0, 1), (1, 0), (1, 1)], 0.25)
            elif ".upsample.conv" in name or "nin_shortcut" in name or "quant_conv" in name:
                k = p.shape[-1] // 2
                _identity_conv(p, [(k, k)], 1.0)
        # Encoder: pixels in [-1, 1] → layout; GroupNorm (16 channels per group) → x + OFFSET.
        _layout(params["encoder.conv_in.weight"], params["encoder.conv_in.bias"], 1.0, 1, 1)
        group = 16
        sigma = A * (3 * group - 9) ** 0.5 / group  # std of one group [x, A, -x, 0] × 3 + zeros, x → 0
        mean = 3 * A / group
        _norm_affine(params["encoder.norm_out.weight"], params["encoder.norm_out.bias"], sigma, mean)
        w, b = params["encoder.conv_out.weight"], params["encoder.conv_out.bias"]
        for k in range(3):
            w[k, 4 * k, 1, 1] = 1.0 / LATENT_SCALE
            b[k] = -OFFSET / LATENT_SCALE
        b[4:].fill_(-20.0)  # log-variance: near-deterministic latents
        # Decoder: latent → layout; GroupNorm (4 channels per group) → x + OFFSET → pixels.
        _layout(params["decoder.conv_in.weight"], params["decoder.conv_in.bias"], LATENT_SCALE, 1, 1)
        sigma_d = A * 3 ** 0.5 / 4
        _norm_affine(params["decoder.norm_out.weight"], params["decoder.norm_out.bias"], sigma_d, A / 4)
        w, b = params["decoder.conv_out.weight"], params["decoder.conv_out.bias"]
        for k in range(3):
            w[k, 4 * k, 1, 1] = 1.0
            b[k] = -OFFSET
    return ae.state_dict()


def _norm_affine(weight: torch.Tensor, bias: torch.Tensor, sigma: float, mean: float) -> None:
    weight.zero_()
    bias.zero_()
    for k in range(3):
        weight[4 * k] = sigma
        bias[4 * k] = mean + OFFSET


def build_vae():
    """A ComfyUI ``VAE`` object with the hand-set weights."""
    import comfy.sd  # noqa: PLC0415 - ComfyUI is importable only after import_comfy()

    return comfy.sd.VAE(sd=build_vae_state_dict())
