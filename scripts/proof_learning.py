"""Proof that PSA training learns *user-conditioned* preferences, on CPU (README: Training).

1. A synthetic Sage-format data set whose preferences conflict across users: for the same
   caption, users who forbid the category prefer the safe drawing, the others the explicit one.
2. A denoising base. The tiny SD1.5 fixture has random weights, and its ε barely depends on the
   image (measured: spread across images ≈ 0.0005 against ε std ≈ 0.008), so no preference can be
   expressed through it. As a stand-in for a pretrained checkpoint, its UNet is first fitted for
   a few steps to denoise the *training* drawings (plain ε-MSE; cached under .cache/fixtures).
3. Diffusion-DPO training of the adapter on that frozen base twice, with the same data, seed
   and schedule: once with the real user embeddings, once with every embedding zeroed.
   Held-out implicit accuracy (new users, new drawings) is reported for both.

    python -m scripts.proof_learning [--dpo-steps 40] [--denoise-steps 120] [--out DIR]
"""
from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from devkit.cli import positive_int
from training.config import TrainConfig
from training.model import load_base
from training.synthetic import generate
from training.trainer import Trainer

REPO_ROOT = Path(__file__).resolve().parent.parent

FIXTURE = REPO_ROOT / ".cache" / "fixtures" / "sd15_tiny.safetensors"
DATA_ARGS = dict(users=16, val_users=8, captions=8, val_captions=4, categories=1, embed_dim=64, image_size=64)


def fit_denoiser(trainer, steps: int, seed: int, cache_dir: Path, fixture: Path = FIXTURE) -> None:
    """Fit the base UNet (in place) to denoise the training images; cached by data and settings."""
    unet = trainer.base.model.model.diffusion_model
    key = hashlib.sha256(f"{trainer.data_fp}-{steps}-{seed}-{fixture.stat().st_size}".encode()).hexdigest()[:16]
    cached = cache_dir / f"sd15_tiny_denoiser_{key}.safetensors"
    if cached.is_file():
        unet.load_state_dict(load_file(str(cached)))
        return
    paths = sorted({p.chosen for p in trainer.train_set.pairs} | {p.rejected for p in trainer.train_set.pairs})
    latents = trainer.latents.get(paths, [False] * len(paths))
    sampling, gen = trainer.model_sampling, torch.Generator().manual_seed(seed)
    conds = trainer.text.batch([""] * 16)
    unet.requires_grad_(True)
    optimizer = torch.optim.AdamW(unet.parameters(), lr=1e-4)
    for _ in range(steps):
        x0 = latents[torch.randint(0, len(paths), (16,), generator=gen)]
        noise = torch.randn(x0.shape, generator=gen)
        sigma = sampling.sigma(torch.randint(0, 1000, (16,), generator=gen).float())
        x_t = sampling.noise_scaling(sigma.reshape(-1, 1, 1, 1), noise, x0)
        denoised = trainer.base.model.model.apply_model(x_t, sigma, transformer_options={"cond_or_uncond": [0]},
                                                        **conds)
        loss = (((x_t - denoised) / sigma.reshape(-1, 1, 1, 1) - noise) ** 2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    unet.requires_grad_(False)
    cache_dir.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().contiguous() for k, v in unet.state_dict().items()}, str(cached))


def run_proof(out: Path, dpo_steps: int = 40, denoise_steps: int = 120, seed: int = 0, lr: float = 1e-3,
              fixture: Path = FIXTURE) -> dict:
    """Both runs; returns held-out implicit accuracy with real and with zeroed embeddings."""
    data = generate(out / "data", seed=seed, **DATA_ARGS)
    base = load_base(fixture)
    results = {}
    for name, zero in (("real_embeddings", False), ("zero_embeddings", True)):
        cfg = TrainConfig(checkpoint=str(fixture), train_data=str(data["train"]), val_data=str(data["val"]),
                          embeddings=str(data["embeddings"]), output_dir=str(out / name), resolution=64,
                          batch_size=8, max_steps=dpo_steps, lr=lr, warmup_steps=0, checkpoint_every=0,
                          validate_every=0, progress=False, latent_cache=str(out / "latents"), random_flip=False,
                          seed=seed, zero_embeddings=zero)
        trainer = Trainer(cfg, base=base)
        fit_denoiser(trainer, denoise_steps, seed, fixture.parent, fixture)  # cached after the first fit
        started = time.monotonic()
        trainer.train()
        results[name] = {**trainer.evaluate(), "seconds": round(time.monotonic() - started, 1)}
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.proof_learning", description=__doc__.split("\n\n")[0],
                                     epilog="Passes when held-out accuracy is ≥ 0.85 with the real embeddings and "
                                            "≤ 0.65 with zeroed ones (exit status 0; 1 when it fails).")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / ".cache" / "proof_learning", metavar="DIR",
                        help="working folder: data set, fitted base, both runs (default: .cache/proof_learning)")
    parser.add_argument("--dpo-steps", type=positive_int, default=40, metavar="N",
                        help="Diffusion-DPO optimizer steps of each run (default: 40)")
    parser.add_argument("--denoise-steps", type=positive_int, default=120, metavar="N",
                        help="steps fitting the tiny base to denoise the drawings (default: 120)")
    parser.add_argument("--seed", type=int, default=0, help="seed of data, fitting and training (default: 0)")
    args = parser.parse_args(argv)
    results = run_proof(args.out, args.dpo_steps, args.denoise_steps, args.seed)
    print(json.dumps(results, indent=1))
    real, zero = results["real_embeddings"]["accuracy"], results["zero_embeddings"]["accuracy"]
    verdict = real >= 0.85 and zero <= 0.65
    print(f"held-out implicit accuracy: real embeddings {real:.3f} (need ≥ 0.85), zeroed {zero:.3f} (need ≤ 0.65)"
          f" -> {'PASS' if verdict else 'FAIL'}")
    return 0 if verdict else 1


if __name__ == "__main__":
    raise SystemExit(main())
