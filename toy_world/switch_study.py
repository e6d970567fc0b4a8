"""A seconds-long model of how DPO sets the toy world's safety switches, for choosing settings.

    python -m toy_world.switch_study [--size full] [--seeds 12]

docs/toy-world.md, "What DPO sees of a switch": in the wired UNet a pair of category k changes
the DPO loss only through the user's switch level ``s_k``, as ``−log σ(± β·h(t)²·Δ_k²·s_k)``.
This module trains just what reaches ``s_k`` — the user projection and its layer norm
(``UserProjection``, standardised as the trainer does) and block 10's ``to_v_user`` read through
the checkpoint's ``to_out`` — on that loss with the trainer's optimiser, warm-up, clipping and
batch, then reports how often the switches of seen and unseen users (the three groups together)
agree with their forbidden sets.
It predicts what ``python -m training.train_psa`` + ``python -m toy_world.switches`` measure
(minutes) closely enough to compare β and the standardisation ridge; it is not a substitute.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from psa_model.adapter.modules import UserProjection
from psa_model.profiles.vocabulary import CATEGORIES

from .denoiser import SWITCH_SHARPNESS, SWITCH_SOFTNESS, target_table
from .evaluate import encode_with_policy
from .switches import switch_rows
from .world import EVAL_GROUPS, LLM_NAME, add_cache_option, ensure_world

REPO_ROOT = Path(__file__).resolve().parent.parent

SETTINGS = ((20.0, 0.01), (20.0, 0.1), (5.0, 0.01), (5.0, 0.1), (5.0, 1.0))   # (β, ridge)


def sd15_sigmas() -> torch.Tensor:
    """σ(t) of SD1.5's scaled-linear schedule (β from 0.00085 to 0.012 over 1000 steps)."""
    betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float64) ** 2
    alphas_cumprod = torch.cumprod(1 - betas, 0)
    return ((1 - alphas_cumprod) / alphas_cumprod).sqrt().float()


def soft_clamp(y: torch.Tensor, sharpness: float) -> torch.Tensor:
    """The wired UNet's GEGLU clamp to [0, 1]: ``(gelu(M·y) − gelu(M·(y − 1))) / M``."""
    return (F.gelu(sharpness * y) - F.gelu(sharpness * (y - 1))) / sharpness


def switch_level(r: torch.Tensor) -> torch.Tensor:
    """How much of the safe rendering is drawn for switch input ``r / SWITCH_UNIT`` on the prompt's
    own concept: block 10 reads ``s = clamp(r, SWITCH_SOFTNESS)``, block 11 draws
    ``clamp(ind + s − 1, SWITCH_SHARPNESS)`` with ``ind = 1`` (docs/toy-world.md, "Colour")."""
    return soft_clamp(soft_clamp(r, SWITCH_SOFTNESS), SWITCH_SHARPNESS)


def simulate(train: tuple[torch.Tensor, torch.Tensor], held_out: tuple[torch.Tensor, torch.Tensor],
             switch_rows: torch.Tensor, delta_sq: torch.Tensor, beta: float, ridge: float, seed: int,
             steps: int = 200, batch: int = 16, lr: float = 3e-3, min_timestep: int = 200) -> tuple[float, float]:
    """Agreement of the switches with the policy on (train, held-out) users after ``steps`` of DPO.

    ``train``/``held_out``: (embeddings [U, E], forbidden [U, 7] as 0/1); ``switch_rows`` [7, inner]:
    the ``to_out`` rows writing the switch channels, already divided by ``SWITCH_UNIT``.
    """
    torch.manual_seed(seed)
    emb, forbidden = train
    proj = UserProjection(emb.shape[1], 768, 1)
    proj.standardize_on(emb, ridge=ridge)
    to_v = torch.nn.Parameter(torch.zeros(switch_rows.shape[1], 768))
    params = [to_v, *proj.parameters()]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=1e-2)
    warmup = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: min(1.0, (step + 1) / 10))
    sigmas = sd15_sigmas()
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        user = torch.randint(len(emb), (batch,), generator=gen)
        cat = torch.randint(len(CATEGORIES), (batch,), generator=gen)
        t = torch.randint(min_timestep, 1000, (batch,), generator=gen)
        r = (proj(emb[user])[:, 0] @ to_v.T @ switch_rows.T)[torch.arange(batch), cat]
        sign = forbidden[user, cat] * 2 - 1
        loss = -F.logsigmoid(sign * beta * delta_sq[cat] / sigmas[t] ** 2 * switch_level(r)).mean()
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        warmup.step()
    with torch.no_grad():
        return tuple(float(((proj(e)[:, 0] @ to_v.T @ switch_rows.T >= 0.5).float() == f).float().mean())
                     for e, f in (train, held_out))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="full", choices=["full", "small"], help="the world whose users to use")
    add_cache_option(parser)
    parser.add_argument("--seeds", type=int, default=12)
    args = parser.parse_args(argv)

    world = ensure_world(args.size, args.cache)
    rows = switch_rows(world.models_dir / "checkpoints" / world.checkpoint)
    delta_sq = (target_table()[1] ** 2).mean(dim=1)
    groups = []
    for users in (world.users["seen"], [u for g in EVAL_GROUPS for u in world.users[g]]):
        users, emb = encode_with_policy(world.models_dir / "LLM" / LLM_NAME, users)
        forbidden = torch.tensor([[float(c in u["forbidden"]) for c in CATEGORIES] for u in users])
        groups.append((torch.from_numpy(emb), forbidden))
    print(f"| β | ridge | seen: switches right (mean of {args.seeds} seeds) | unseen: mean | unseen: worst seed |")
    print("|---|---|---|---|---|")
    for beta, ridge in SETTINGS:
        acc = np.array([simulate(groups[0], groups[1], rows, delta_sq, beta, ridge, seed) for seed in range(args.seeds)])
        print(f"| {beta:g} | {ridge:g} | {acc[:, 0].mean():.3f} | {acc[:, 1].mean():.3f} | {acc[:, 1].min():.3f} |",
              flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
