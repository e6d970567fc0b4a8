"""The toy world's UNet: ComfyUI's SD1.5 ``UNetModel`` wired as an exact colour-field denoiser.

docs/toy-world.md, "The UNet", explains the construction; in short, for a prompt naming concept
``k`` whose picture is the flat latent colour ``c`` the UNet returns

    eps(z, t) = g(t) · z − h(t) · c',   g = sqrt(σ² + 1) / σ,   h = 1 / σ,

which is the exact noise prediction for a picture that is ``c'`` everywhere (ComfyUI: the model
sees ``z = x / sqrt(σ² + 1)`` and denoises ``x − σ·eps = c'``). ``c'`` is looked up by output
block 11's cross-attention (attn2), the one layer of the 16 PSA layers that is live here:

    c' = Σ_k o_k · sat_k + Σ_k o_k · clamp(r_k, 0, 1) · (safe_k − sat_k)

with ``o`` the one-hot code of the prompt's concept (attn2 over the concept words of
:mod:`toy_world.text_encoder`) and ``r_k`` a *safety switch* per category that the text never
sets. PSA's user branch adds to exactly these attn2 outputs, so a trained adapter can turn on
``r_k`` for the categories a user must not see. The colour table (``sat``, ``safe``) is learned
from the pictures (:mod:`toy_world.base_model`); everything else is set here.

Every other block is an identity (zero last layers) or cut off, as in the smoke fixtures.
Multiplication by a time-dependent gain comes from GroupNorm: a group holding the signal beside
a constant pair ``±S(t)`` divides it by the group's spread, ``∝ S(t)``. ``S(t)`` is a
least-squares fit over ComfyUI's sinusoidal timestep features (relative error ≤ 2 % near
t = 0, ≤ 0.2 % above t = 20).
"""
from __future__ import annotations

import copy
import math

import torch

from devkit.fixtures import fill_parameters
from devkit.unet_configs import SD15_TINY
from psa_model.profiles.vocabulary import CATEGORIES

from . import concepts
from .text_encoder import code_dims, concept_index
from .time_gains import K_GAIN, wire_time
from .time_gains import centre as _centre

N_CONCEPTS = len(concepts.CONCEPTS)
LATENT_CHANNELS = 4

# Output block 11's residual stream (320 channels, GroupNorm groups of 10).
Z_GROUP = 0    # channels 0–9: ±S_A(t), ±ε_z·z_k
C_GROUP = 10   # channels 10–19: ±S_B(t), ±ε_c·c'_k
EPS_Z = 1e-3
EPS_C = 1e-3
OUT_GAIN = 0.25     # λ: the final swish sees λ·(signal) + OUT_OFFSET
OUT_OFFSET = 30.0


# The transformer's internal stream.
STREAM_CONST = 1e5
# Block 10's stream constant. A layer norm couples every channel through its spread; the adapter's
# gradient on the concept code through that coupling scales as 1 / LOOKUP_CONST². It must stay far
# below Adam's epsilon (1e-8), or Adam, which rescales any gradient to a full step, lets the adapter
# rewrite the prompt (measured: 2e-6 at 1e5, rows of 0.7 after 150 steps).
LOOKUP_CONST = 3e7
# The text writes the concept code at this size. Rounding noise in the layer norm's backward
# (~6e-8 of the largest gradient) still reaches the code's channels, and Adam turns noise into
# steps: the adapter's code rows random-walk by ~0.5 in 150 steps. A code of 100 read against a
# threshold of 50 is out of that walk's reach.
ONEHOT_VALUE = 100.0
ONEHOT_AT = 20      # channels 20 + 2k, 21 + 2k: ±o_k
SWITCH_AT = 40      # channels 40 + 2k, 41 + 2k: ±r_k (k over the 7 categories)
COLOUR_AT = 60      # channels 60 + 2c, 61 + 2c: ±c'_c (block 11)
HANDOVER_AT = 100   # stream channels 100 + 2i, 101 + 2i: ±ind / ±s (ff output in block 10, input in 11)
N_HANDOVER = len(concepts.CONCEPTS) + len(CATEGORIES)
HANDOVER_GROUPS = (N_HANDOVER + 3) // 4
HANDOVER_X = 100    # block 10 → 11 residual channels, groups of 10 (see handover_channels)
GROUP_CONST = 1000.0
SWITCH_INNER = 40   # attn2 inner dims 40…46 (head 1) carry the switches
KEY_GAIN = 200.0    # concept words win the text attention by exp(KEY_GAIN / sqrt(40)) ≈ e^31.6
LINEAR_GATE = 10.0
SWITCH_SHARPNESS = 40.0   # M: clamp01(y) ≈ (gelu(M·y) − gelu(M·(y − 1))) / M
# A safety switch is fully on at r = SWITCH_UNIT and read with a softer clamp (sharpness
# SWITCH_SOFTNESS): one Adam step moves the adapter's r by up to ~lr·Σ|user token| ≈ 3 (lr 5e-3),
# and a switch pushed below its flat zero (r < −4·SWITCH_UNIT / SWITCH_SOFTNESS) stops learning.
SWITCH_UNIT = 12.0
SWITCH_SOFTNESS = 10.0


def latent_colour(rgb) -> torch.Tensor:
    """RGB in [0, 1] → the toy VAE's latent colour (channels 0–2 in [−1, 1], channel 3 zero)."""
    return torch.tensor([2 * rgb[0] - 1, 2 * rgb[1] - 1, 2 * rgb[2] - 1, 0.0])


def target_table() -> tuple[torch.Tensor, torch.Tensor]:
    """The colours the pictures show: ``sat`` ``[N_CONCEPTS, 4]`` and ``safe − sat`` ``[7, 4]``."""
    sat = torch.stack([latent_colour(c.colour) for c in concepts.CONCEPTS.values()])
    delta = torch.stack([latent_colour(concepts.CONCEPTS[cat].safe_colour) - sat[concept_index(cat)]
                         for cat in CATEGORIES])
    return sat, delta


def new_unet():
    """ComfyUI's SD1.5 ``UNetModel`` (fixture config), random dead blocks, wired live path."""
    import comfy.ops  # noqa: PLC0415 - ComfyUI is importable only after import_comfy()
    from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel  # noqa: PLC0415 - ComfyUI is importable only after import_comfy()

    unet = UNetModel(**copy.deepcopy(SD15_TINY), operations=comfy.ops.disable_weight_init)
    fill_parameters(unet, seed=3)
    with torch.no_grad():
        for name, module in unet.named_modules():
            if name.endswith("out_layers") or name.endswith("proj_out"):
                last = module[-1] if isinstance(module, torch.nn.Sequential) else module
                last.weight.zero_()
                last.bias.zero_()
        _cut_lower_levels(unet)
        _wire_input(unet)
        wire_time(unet, Z_GROUP, C_GROUP)
        _wire_lookup(unet)
        _wire_colour(unet)
        _wire_output(unet)
        set_colour_table(unet, *(torch.zeros_like(t) for t in target_table()))
    return unet


def _cut_lower_levels(unet) -> None:
    """Output block 9 keeps only the skip from input block 2, block 10 only what block 9 passes,
    so output block 11 receives ``[conv_in(z), conv_in(z)]`` (input blocks 1–2 are identities)."""
    for block, keep_second in ((9, True), (10, False)):
        skip = unet.output_blocks[block][0].skip_connection
        half = skip.weight.shape[1] // 2
        skip.weight.zero_()
        eye = torch.eye(half).view(half, half, 1, 1)
        if keep_second:
            skip.weight[:, half:] = eye
        else:
            skip.weight[:, :half] = eye
        skip.bias.zero_()


def _wire_input(unet) -> None:
    """``conv_in``: channels 2 + 2k, 3 + 2k hold ±z_k; block 11's skip scales them by ε_z."""
    w, _ = _centre(unet.input_blocks[0][0])
    skip = unet.output_blocks[11][0].skip_connection
    skip.weight.zero_()
    skip.bias.zero_()
    for k in range(LATENT_CHANNELS):
        w[Z_GROUP + 2 + 2 * k, k] = 1.0
        w[Z_GROUP + 3 + 2 * k, k] = -1.0
        for ch in (Z_GROUP + 2 + 2 * k, Z_GROUP + 3 + 2 * k):
            skip.weight[ch, ch, 0, 0] = EPS_Z


def _site(unet, block: int):
    return unet.output_blocks[block][1]


def _block(unet, block: int = 11):
    return _site(unet, block).transformer_blocks[0]


def _constant_stream(st, const: float) -> None:
    """``proj_in`` ignores its input and starts the stream at ±``const`` (channels 0, 1); attn1 is off."""
    st.proj_in.weight.zero_()
    st.proj_in.bias.zero_()
    st.proj_in.bias[0], st.proj_in.bias[1] = const, -const
    blk = st.transformer_blocks[0]
    for norm in (blk.norm1, blk.norm2, blk.norm3):
        norm.weight.fill_(1.0)
        norm.bias.zero_()
    blk.attn1.to_out[0].weight.zero_()
    blk.attn1.to_out[0].bias.zero_()
    for m in (blk.attn2.to_q, blk.attn2.to_k, blk.attn2.to_v, blk.attn2.to_out[0], blk.ff.net[0].proj, blk.ff.net[2]):
        m.weight.zero_()
        if m.bias is not None:
            m.bias.zero_()


def _unit(st) -> float:
    """What a layer-normed ±const pair reads in a stream of this width: sqrt(width / 2)."""
    return math.sqrt(st.proj_in.weight.shape[0] / 2)


def _clamp_unit(proj, inner: int, unit: int, reads: list[tuple[int, float]], shift: float,
                sharpness: float = SWITCH_SHARPNESS) -> None:
    """GEGLU unit pair ``unit`` / ``unit + 1`` computing M·clamp01(Σ w·x + shift) (value 1, gated).

    clamp01(y) ≈ (gelu(M·y) − gelu(M·(y − 1))) / M: flat (zero gradient) outside [0, 1].
    """
    for j, extra in ((unit, 0.0), (unit + 1, -1.0)):
        proj.bias[j] = 1.0
        for channel, w in reads:
            _read(proj.weight, inner + j, channel, sharpness * w)
        proj.bias[inner + j] = sharpness * (shift + extra)


def _wire_lookup(unet) -> None:
    """Output block 10's transformer: concept lookup (text) and safety switches (PSA), clamped.

    attn2 writes the one-hot concept code ``o`` (text) and the switches ``r`` (only PSA's user
    branch writes there); the feed-forward turns them into ``ind_k = clamp01(2·o_k / 100 − 0.5)``
    (exactly 0 or 1 with zero gradient at o ∈ {0, 100}, so an adapter cannot learn to rewrite the
    prompt) and ``s_k = clamp01(r_k)``; ``proj_out`` hands these 17 values to block 11 in
    GroupNorm-safe groups (±GROUP_CONST beside four ± pairs).
    """
    st = _site(unet, 10)
    _constant_stream(st, LOOKUP_CONST)
    blk = st.transformer_blocks[0]
    attn = blk.attn2
    unit = _unit(st)
    attn.to_q.weight[0, 0], attn.to_q.weight[0, 1] = 0.5 / unit, -0.5 / unit
    out = attn.to_out[0]
    for k in range(N_CONCEPTS):
        plus, minus = code_dims(k)
        attn.to_k.weight[0, plus] += KEY_GAIN / 2
        attn.to_k.weight[0, minus] -= KEY_GAIN / 2
        attn.to_v.weight[k, plus], attn.to_v.weight[k, minus] = ONEHOT_VALUE / 2, -ONEHOT_VALUE / 2
        out.weight[ONEHOT_AT + 2 * k, k], out.weight[ONEHOT_AT + 1 + 2 * k, k] = 1.0, -1.0
    for k in range(len(CATEGORIES)):
        out.weight[SWITCH_AT + 2 * k, SWITCH_INNER + k] = 1.0
        out.weight[SWITCH_AT + 1 + 2 * k, SWITCH_INNER + k] = -1.0
    blk.norm3.weight[ONEHOT_AT: SWITCH_AT + 2 * len(CATEGORIES)] = LOOKUP_CONST / unit

    proj, inner = blk.ff.net[0].proj, blk.ff.net[0].proj.weight.shape[0] // 2
    ff_out = blk.ff.net[2]
    for i in range(N_HANDOVER):
        if i < N_CONCEPTS:
            _clamp_unit(proj, inner, 2 * i, [(ONEHOT_AT + 2 * i, 2.0 / ONEHOT_VALUE)], -0.5)
        else:
            _clamp_unit(proj, inner, 2 * i, [(SWITCH_AT + 2 * (i - N_CONCEPTS), 1.0 / SWITCH_UNIT)], 0.0,
                        SWITCH_SOFTNESS)
        m = SWITCH_SHARPNESS if i < N_CONCEPTS else SWITCH_SOFTNESS
        for sign, row in ((1.0, HANDOVER_AT + 2 * i), (-1.0, HANDOVER_AT + 2 * i + 1)):
            ff_out.weight[row, 2 * i] = sign / m
            ff_out.weight[row, 2 * i + 1] = -sign / m
    pw, pb = _centre(st.proj_out)
    for i in range(N_HANDOVER):
        plus, minus = handover_channels(i)
        pw[plus, HANDOVER_AT + 2 * i], pw[plus, HANDOVER_AT + 2 * i + 1] = 0.5, -0.5
        pw[minus, HANDOVER_AT + 2 * i], pw[minus, HANDOVER_AT + 2 * i + 1] = -0.5, 0.5
    for g in range(HANDOVER_GROUPS):
        pb[HANDOVER_X + 10 * g], pb[HANDOVER_X + 10 * g + 1] = GROUP_CONST, -GROUP_CONST


def handover_channels(i: int) -> tuple[int, int]:
    """Block-10 → block-11 channels of value ``i`` (ind_0…ind_9, then s_0…s_6): group of 10 with
    ±GROUP_CONST in its first two channels and four ± pairs."""
    g, j = divmod(i, 4)
    plus = HANDOVER_X + 10 * g + 2 + 2 * j
    return plus, plus + 1


def _wire_colour(unet) -> None:
    """Output block 11's transformer: colour ``c'`` from ``ind`` and ``s`` (its attn2 is off, so PSA
    has no effect here); ``proj_out`` writes ±ε_c·c' beside ±S_B(t) for the final GroupNorm."""
    skip = unet.output_blocks[11][0].skip_connection
    for i in range(N_HANDOVER):
        for ch in handover_channels(i):
            skip.weight[ch, ch, 0, 0] = 1.0
    for g in range(HANDOVER_GROUPS):
        for ch in (HANDOVER_X + 10 * g, HANDOVER_X + 10 * g + 1):
            skip.weight[ch, ch, 0, 0] = 1.0
    st = _site(unet, 11)
    _constant_stream(st, STREAM_CONST)
    read = GROUP_CONST / math.sqrt(5.0)   # GroupNorm of a handover group divides by ≈ GROUP_CONST / sqrt(5)
    for i in range(N_HANDOVER):
        plus, minus = handover_channels(i)
        st.proj_in.weight[HANDOVER_AT + 2 * i, plus, 0, 0] = read / 2
        st.proj_in.weight[HANDOVER_AT + 2 * i, minus, 0, 0] = -read / 2
        st.proj_in.weight[HANDOVER_AT + 2 * i + 1, plus, 0, 0] = -read / 2
        st.proj_in.weight[HANDOVER_AT + 2 * i + 1, minus, 0, 0] = read / 2
    blk = st.transformer_blocks[0]
    blk.norm3.weight[HANDOVER_AT: HANDOVER_AT + 2 * N_HANDOVER] = STREAM_CONST / _unit(st)
    proj, inner = blk.ff.net[0].proj, blk.ff.net[0].proj.weight.shape[0] // 2
    for k in range(N_CONCEPTS):                      # linear units: ind_k · gelu(LINEAR_GATE)
        _read(proj.weight, k, HANDOVER_AT + 2 * k)
        proj.bias[inner + k] = LINEAR_GATE
    n_cat = len(CATEGORIES)
    for k, cat in enumerate(CATEGORIES):             # AND units: clamp01(ind_k + s_k − 1)
        ki = concept_index(cat)
        for j, extra in ((N_CONCEPTS + k, 0.0), (N_CONCEPTS + n_cat + k, -1.0)):
            proj.bias[j] = 1.0
            _read(proj.weight, inner + j, HANDOVER_AT + 2 * ki, SWITCH_SHARPNESS)
            proj.weight[inner + j, HANDOVER_AT + 2 * (N_CONCEPTS + k)] = SWITCH_SHARPNESS / 2
            proj.weight[inner + j, HANDOVER_AT + 2 * (N_CONCEPTS + k) + 1] = -SWITCH_SHARPNESS / 2
            proj.bias[inner + j] = SWITCH_SHARPNESS * (extra - 1.0)
    pw, _ = _centre(st.proj_out)
    for c in range(LATENT_CHANNELS):
        src_plus, src_minus = COLOUR_AT + 2 * c, COLOUR_AT + 2 * c + 1
        for dst, sign in ((C_GROUP + 2 + 2 * c, 1.0), (C_GROUP + 3 + 2 * c, -1.0)):
            pw[dst, src_plus] = sign * EPS_C / 2
            pw[dst, src_minus] = -sign * EPS_C / 2


def _read(weight: torch.Tensor, row: int, plus_channel: int, gain: float = 1.0) -> None:
    """Row reads the ± pair at ``plus_channel`` as ``gain · (x⁺ − x⁻) / 2`` (mean shifts cancel)."""
    weight[row, plus_channel] = gain / 2
    weight[row, plus_channel + 1] = -gain / 2


def colour_weights(unet) -> torch.Tensor:
    """The feed-forward output weight that holds the colour table (rows = colour channels ±)."""
    return _block(unet).ff.net[2].weight


def set_colour_table(unet, sat: torch.Tensor, delta: torch.Tensor) -> None:
    """Write ``sat`` [N_CONCEPTS, 4] and ``safe − sat`` [7, 4] into the feed-forward's output."""
    w = colour_weights(unet)
    n_cat = len(CATEGORIES)
    with torch.no_grad():
        for c in range(LATENT_CHANNELS):
            for sign, row in ((1.0, COLOUR_AT + 2 * c), (-1.0, COLOUR_AT + 2 * c + 1)):
                w[row, :N_CONCEPTS] = sign * sat[:, c] / LINEAR_GATE
                w[row, N_CONCEPTS:N_CONCEPTS + n_cat] = sign * delta[:, c] / SWITCH_SHARPNESS
                w[row, N_CONCEPTS + n_cat:N_CONCEPTS + 2 * n_cat] = -sign * delta[:, c] / SWITCH_SHARPNESS


def _wire_output(unet) -> None:
    """``out``: GroupNorm divides ε_z·z by S_A(t) and ε_c·c' by S_B(t); the conv subtracts."""
    norm = unet.out[0]
    norm.weight.zero_()
    norm.bias.zero_()
    w, _ = _centre(unet.out[2])
    for k in range(LATENT_CHANNELS):
        for ch, eps in ((Z_GROUP + 2 + 2 * k, EPS_Z), (C_GROUP + 2 + 2 * k, EPS_C)):
            norm.weight[ch] = OUT_GAIN * K_GAIN / eps
            norm.bias[ch] = OUT_OFFSET
        w[k, Z_GROUP + 2 + 2 * k] = 1.0 / OUT_GAIN
        w[k, C_GROUP + 2 + 2 * k] = -1.0 / OUT_GAIN


def switch_hook(unet, amounts: torch.Tensor):
    """Forward hook on block 10's attn2 turning switches on by ``amounts`` [B, 7] (1 = fully; base
    training and tests), in the channels PSA's user branch writes."""
    out = _block(unet, 10).attn2.to_out[0]

    def hook(_module, _inputs, output):
        extra = torch.zeros(output.shape[0], 1, output.shape[-1], dtype=output.dtype)
        for k in range(len(CATEGORIES)):
            extra[:, 0, SWITCH_AT + 2 * k] = amounts[:, k] * SWITCH_UNIT
            extra[:, 0, SWITCH_AT + 2 * k + 1] = -amounts[:, k] * SWITCH_UNIT
        return output + extra

    return out.register_forward_hook(hook)
