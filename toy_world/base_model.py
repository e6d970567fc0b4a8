"""The toy world's base SD1.5: wired text encoder and UNet, colour table learned from the pictures.

docs/toy-world.md, "The checkpoint". :mod:`toy_world.text_encoder` and :mod:`toy_world.denoiser`
set the wiring (which words name which concept, how the UNet denoises a flat colour); what each
concept *looks like* — its colour and its safe rendering's colour — is learned here by plain
eps-prediction training (DDPM loss) on the concept pictures, starting from a blank table.

During training the safety switch of a random subset of categories is turned on (a forward hook
adds to attn2's output exactly where PSA's user branch adds, see
:func:`toy_world.denoiser.switch_hook`); the target is then the safe rendering of a prompt in that
subset. Plain prompts (no switch) draw the concept: the base draws forbidden concepts.
"""
from __future__ import annotations

import time
from typing import Callable

import torch

from devkit.unet_configs import SD15_TINY
from psa_model.profiles.vocabulary import CATEGORIES

from training.threads import ThreadGovernor

from . import concepts, denoiser
from .text_encoder import build_clip  # noqa: F401  (re-exported: the world builds both here)

SWITCH_SHARE = 0.35
# Sampling settings of the toy world. Guidance is off (cfg 1): the denoiser is exact, so cfg > 1
# would scale the flat colours away from the pictures (docs/toy-world.md, "Sampling").
SAMPLER_STEPS = 10
CFG = 1.0


def encode_texts(clip, texts: list[str]) -> dict[str, torch.Tensor]:
    """Prompt → ``[77, 768]`` conditioning, through ComfyUI's CLIP exactly as CLIPTextEncode does."""
    out = {}
    with torch.no_grad():
        for text in dict.fromkeys(texts):
            out[text] = clip.encode_from_tokens(clip.tokenize(text))[0].float()
    return out


def live_path_forward(unet, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
    """The UNet's output from its live path only: ``out(block11([block10([h, h]), h]))``, ``h = conv_in(x)``.

    Equal to ``unet(x, t, context)`` because every block in between is an identity
    (:func:`toy_world.denoiser.new_unet`; tests/host/test_toy_world.py checks it).
    """
    from comfy.ldm.modules.diffusionmodules.openaimodel import forward_timestep_embed, timestep_embedding  # noqa: PLC0415 - ComfyUI is importable only after import_comfy()

    emb = unet.time_embed(timestep_embedding(t, unet.model_channels).to(x.dtype))
    h0 = forward_timestep_embed(unet.input_blocks[0], x, emb, context, {})
    h10 = forward_timestep_embed(unet.output_blocks[10], torch.cat([h0, h0], dim=1), emb, context, {})
    h = forward_timestep_embed(unet.output_blocks[11], torch.cat([h10, h0], dim=1), emb, context, {})
    return unet.out(h)


def train_colour_table(unet, conds: dict[str, torch.Tensor], latents: dict[tuple[str, bool], torch.Tensor],
                       steps: int, batch: int, seed: int, lr: float = 0.01,
                       log: Callable[[str], None] = print, on_step: Callable[[int], None] | None = None) -> float:
    """Eps-prediction training of the colour table (the only trained weight); returns the last loss.

    The loss is weighted by σ_t² (the x0 error a sampler makes from an eps error), so that every
    noise level counts alike. ``latents`` may be of any spatial size: the pictures are flat and the
    live path works pixel by pixel (docs/toy-world.md, "Cost").
    """
    import comfy.model_sampling  # noqa: PLC0415 - ComfyUI is importable only after import_comfy()
    import comfy.supported_models  # noqa: PLC0415 - ComfyUI is importable only after import_comfy()

    gen = torch.Generator().manual_seed(seed)
    ms = comfy.model_sampling.ModelSamplingDiscrete(comfy.supported_models.SD15(SD15_TINY))
    alphas = 1.0 / (1.0 + ms.sigmas.double() ** 2)
    names = list(concepts.CONCEPTS)
    table = denoiser.colour_weights(unet)
    for p in unet.parameters():
        p.requires_grad_(False)
    table.requires_grad_(True)
    opt = torch.optim.Adam([table], lr=lr)
    decay = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: 1.0 - i / steps)
    amounts = torch.zeros(batch, len(CATEGORIES))
    hook = denoiser.switch_hook(unet, amounts)
    started = time.monotonic()
    loss = torch.tensor(float("nan"))
    governor = ThreadGovernor()   # its tiny steps suffer most when other programs share the cores
    try:
        for step in range(steps):
            xs, ctx = [], []
            amounts.zero_()
            for b in range(batch):
                name = names[int(torch.randint(len(names), (1,), generator=gen))]
                on = torch.rand(len(CATEGORIES), generator=gen) < SWITCH_SHARE
                amounts[b] = on.float()
                category = concepts.CONCEPTS[name].category
                safe = category is not None and bool(on[CATEGORIES.index(category)])
                xs.append(latents[(name, safe)])
                prompts = concepts.prompts_for(name)
                ctx.append(conds[prompts[int(torch.randint(len(prompts), (1,), generator=gen))]])
            x0 = torch.stack(xs)
            t = torch.randint(0, 1000, (batch,), generator=gen)
            a = alphas[t].float().view(-1, 1, 1, 1)
            noise = torch.randn(x0.shape, generator=gen)
            xt = a.sqrt() * x0 + (1 - a).sqrt() * noise
            weight = ((1 - a) / a).view(-1)

            def update(xt=xt, t=t, ctx=torch.stack(ctx), noise=noise, weight=weight) -> torch.Tensor:
                pred = live_path_forward(unet, xt, t.float(), ctx)
                step_loss = ((pred - noise) ** 2).mean(dim=(1, 2, 3)).mul(weight).mean()
                opt.zero_grad(set_to_none=True)
                step_loss.backward()
                opt.step()
                return step_loss

            loss = governor.run(update)
            decay.step()
            if on_step is not None:
                on_step(step + 1)
            if step % 50 == 0 or step == steps - 1:
                log(f"base UNet colour table step {step + 1}/{steps} loss {loss.item():.5f} "
                    f"({time.monotonic() - started:.0f} s)")
    finally:
        hook.remove()
        table.requires_grad_(False)
        torch.set_num_threads(governor.many)
    return float(loss.item())


def all_prompts() -> list[str]:
    return [p for n in concepts.CONCEPTS for p in concepts.prompts_for(n)] + [""]
