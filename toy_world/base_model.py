"""The toy world's SD1.5 base: random CLIP-L, hand-set VAE, a UNet trained here (docs/toy-world.md).

The UNet is ComfyUI's SD1.5 ``UNetModel`` (the tiny fixture's config: 320 channels, the 16
SD1.5 cross-attention sites). To fit a 2-core CPU budget only its full-resolution path is
trained and used: input blocks 0–2, output blocks 9–11 and ``out``. Output block 9 is set to
ignore what comes up from the lower levels (its weights on those channels are zero), so the
lower levels run but do not change the result. Training is plain eps-prediction (DDPM loss)
on the concept pictures.

The base also learns a *safety switch* per category: during training a fixed random direction
``d_c`` is added to the output of each trained cross-attention layer for a random subset S of
categories; the target is the safe rendering when the prompt's category is in S. PSA's adapter
adds a per-layer vector to exactly these outputs (README, Architecture), so it can learn to
switch on the forbidden categories of a user. Plain prompts (S empty) draw the concept.
"""
from __future__ import annotations

import copy
import math
import time
from typing import Callable

import torch
import torch.nn.functional as F

from psa_model.profiles.profile import CATEGORIES
from scripts.build_fixtures import SD15_UNET, fill_parameters

from . import concepts

TRAINED_INPUT = (0,)
TRAINED_OUTPUT = (11,)
DIRECTION_STD = 1.0
SAMPLER_STEPS = 10
CFG = 2.0
MAX_WEIGHT = 200.0  # cap on the σ_t² loss weight
HIGH_T = 600  # half the training timesteps are drawn from [HIGH_T, 1000)


def build_clip(seed: int):
    """A seeded random CLIP-L (SD1.5 text encoder), the fixture builder's way."""
    import comfy.sd
    import comfy.supported_models

    clip = comfy.sd.CLIP(target=comfy.supported_models.SD15(SD15_UNET).clip_target())
    fill_parameters(clip.cond_stage_model, seed)
    return clip


def encode_texts(clip, texts: list[str]) -> dict[str, torch.Tensor]:
    """Prompt → ``[77, 768]`` conditioning, through ComfyUI's CLIP exactly as CLIPTextEncode does."""
    out = {}
    with torch.no_grad():
        for text in dict.fromkeys(texts):
            out[text] = clip.encode_from_tokens(clip.tokenize(text))[0].float()
    return out


def new_unet(seed: int):
    import comfy.ops
    from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel

    unet = UNetModel(**copy.deepcopy(SD15_UNET), operations=comfy.ops.disable_weight_init)
    fill_parameters(unet, seed)
    with torch.no_grad():
        for name, module in unet.named_modules():
            if name.endswith("out_layers") or name.endswith("proj_out"):
                last = module[-1] if isinstance(module, torch.nn.Sequential) else module
                last.weight.zero_()
                last.bias.zero_()
        unet.out[-1].weight.mul_(0.1)
        _cut_lower_levels(unet)
    return unet


def _cut_lower_levels(unet) -> None:
    """Make everything between ``conv_in`` and output block 11 an identity path.

    Input blocks 1–2 and output blocks 9–10 keep their zeroed last layers (identities); output
    block 9 passes on only the skip from input block 2, output block 10 only what comes from
    block 9. So output block 11 receives ``[conv_in(x), conv_in(x)]`` and the lower levels run
    without changing the result.
    """
    for block, keep_second in ((9, True), (10, False)):
        res = unet.output_blocks[block][0]
        half = res.skip_connection.weight.shape[1] // 2
        w = res.skip_connection.weight
        w.zero_()
        eye = torch.eye(half, dtype=w.dtype).view(half, half, 1, 1)
        if keep_second:
            w[:, half:] = eye
        else:
            w[:, :half] = eye
        res.skip_connection.bias.zero_()


def trained_parameters(unet) -> list[torch.nn.Parameter]:
    mods = [unet.time_embed, unet.out] + [unet.input_blocks[i] for i in TRAINED_INPUT] + \
        [unet.output_blocks[i] for i in TRAINED_OUTPUT]
    return [p for m in mods for p in m.parameters()]


def trained_attn2(unet) -> list[torch.nn.Module]:
    blocks = [unet.input_blocks[i] for i in TRAINED_INPUT] + [unet.output_blocks[i] for i in TRAINED_OUTPUT]
    return [m for b in blocks for m in b.modules() if m.__class__.__name__ == "BasicTransformerBlock"]


def full_path_forward(unet, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
    """The UNet's output computed from the trained path only (equal to ``unet(x, t, context)``
    because every other block on the way is an identity, see :func:`_cut_lower_levels`)."""
    from comfy.ldm.modules.diffusionmodules.openaimodel import forward_timestep_embed, timestep_embedding

    emb = unet.time_embed(timestep_embedding(t, unet.model_channels).to(x.dtype))
    h0 = forward_timestep_embed(unet.input_blocks[0], x, emb, context, {})
    h = forward_timestep_embed(unet.output_blocks[11], torch.cat([h0, h0], dim=1), emb, context, {})
    return unet.out(h)


class SafetySwitch:
    """Adds ``Σ_c a_c · d_c[layer]`` to each trained attn2 output (per batch row)."""

    def __init__(self, unet, seed: int) -> None:
        gen = torch.Generator().manual_seed(seed)
        self.blocks = trained_attn2(unet)
        dims = [b.attn2.to_out[0].weight.shape[0] for b in self.blocks]
        self.directions = [torch.randn(len(CATEGORIES), d, generator=gen) * DIRECTION_STD for d in dims]
        self.amounts: torch.Tensor | None = None  # [B, 7]
        self.handles = [b.attn2.register_forward_hook(self._hook(i)) for i, b in enumerate(self.blocks)]

    def _hook(self, i: int) -> Callable:
        def hook(_module, _inputs, output):
            if self.amounts is None:
                return output
            return output + (self.amounts @ self.directions[i]).unsqueeze(1).to(output.dtype)
        return hook

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


def sampler_timesteps(model_sampling, steps: int = SAMPLER_STEPS) -> torch.Tensor:
    """The timesteps ComfyUI's "normal" scheduler visits (training puts half its samples there)."""
    import comfy.samplers

    sigmas = comfy.samplers.calculate_sigmas(model_sampling, "normal", steps)[:-1]
    return model_sampling.timestep(sigmas).float()


def train_base(unet, conds: dict[str, torch.Tensor], latents: dict[tuple[str, bool], torch.Tensor], steps: int,
               batch: int, seed: int, lr: float = 1e-3, log: Callable[[str], None] = print) -> SafetySwitch:
    """Eps-prediction training of the trained path; returns the switch (its directions are used later)."""
    import comfy.model_sampling
    import comfy.supported_models

    gen = torch.Generator().manual_seed(seed)
    rng = torch.Generator().manual_seed(seed + 1)
    ms = comfy.model_sampling.ModelSamplingDiscrete(comfy.supported_models.SD15(SD15_UNET))
    visit = sampler_timesteps(ms)
    names = list(concepts.CONCEPTS)
    prompts = {n: concepts.prompts_for(n) for n in names}
    switch = SafetySwitch(unet, seed + 2)
    params = trained_parameters(unet)
    for p in unet.parameters():
        p.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    alphas = 1.0 / (1.0 + ms.sigmas.float() ** 2)  # ᾱ_t from ComfyUI's discrete sigmas
    started = time.monotonic()
    for step in range(steps):
        xs, ctx, amounts = [], [], torch.zeros(batch, len(CATEGORIES))
        for b in range(batch):
            name = names[int(torch.randint(len(names), (1,), generator=gen))]
            on = torch.rand(len(CATEGORIES), generator=gen) < 0.35
            amounts[b] = on.float() * (0.6 + 1.4 * torch.rand(len(CATEGORIES), generator=gen))
            cat = concepts.CONCEPTS[name].category
            safe = cat is not None and bool(on[CATEGORIES.index(cat)])
            xs.append(latents[(name, safe)])
            empty = torch.rand(1, generator=gen).item() < 0.1
            ps = prompts[name]
            ctx.append(conds[""] if empty else conds[ps[int(torch.randint(len(ps), (1,), generator=gen))]])
        x0 = torch.stack(xs)
        if torch.rand(1, generator=gen).item() < 0.5:
            t = visit[torch.randint(len(visit), (batch,), generator=gen)]
        else:
            # the prompt decides the picture only at high noise: put the other half there
            t = torch.randint(HIGH_T, 1000, (batch,), generator=gen).float()
        a = alphas[t.long()].view(-1, 1, 1, 1)
        noise = torch.randn(x0.shape, generator=rng)
        xt = a.sqrt() * x0 + (1 - a).sqrt() * noise
        switch.amounts = amounts
        pred = full_path_forward(unet, xt, t, torch.stack(ctx))
        # eps-MSE weighted by σ_t² (floor 1): at high noise that is the x0 error the sampler's first
        # steps make, where the prompt decides the picture (docs/toy-world.md, "Status")
        w = ((1 - a) / a).clamp(min=1.0, max=MAX_WEIGHT).view(-1)
        loss = ((pred - noise) ** 2).mean(dim=(1, 2, 3)).mul(w).sum() / w.sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        with torch.no_grad():
            _cut_lower_levels(unet)
        if step % 25 == 0 or step == steps - 1:
            log(f"[toy-world] base UNet step {step + 1}/{steps} loss {loss.item():.4f} "
                f"({time.monotonic() - started:.0f} s)")
    switch.amounts = None
    for p in unet.parameters():
        p.requires_grad_(False)
    return switch


def all_prompts() -> list[str]:
    return [p for n in concepts.CONCEPTS for p in concepts.prompts_for(n)] + [""]


def separation(conds: dict[str, torch.Tensor]) -> float:
    """Smallest distance between mean conditionings of two concepts' prompts, over the typical
    distance within a concept (> 1: prompts of different concepts are told apart)."""
    by = {n: torch.stack([conds[p].mean(0) for p in concepts.prompts_for(n)]) for n in concepts.CONCEPTS}
    within = torch.stack([torch.cdist(v, v).mean() for v in by.values()]).mean()
    centres = torch.stack([v.mean(0) for v in by.values()])
    d = torch.cdist(centres, centres) + torch.eye(len(centres)) * 1e9
    return float(d.min() / within) if math.isfinite(float(within)) and within > 0 else float("inf")
