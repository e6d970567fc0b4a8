"""Helpers for the training tests: a synthetic data set and small trainer configs."""
from __future__ import annotations

from pathlib import Path

from training.config import TrainConfig
from training.synthetic import generate


def make_dataset(root: Path, **kw) -> dict[str, Path]:
    args = dict(users=8, val_users=4, captions=4, val_captions=2, categories=2, embed_dim=64, image_size=64, seed=0)
    args.update(kw)
    return generate(root, **args)


def small_config(data: dict[str, Path], out: Path, checkpoint: Path, **kw) -> TrainConfig:
    values = dict(checkpoint=str(checkpoint), train_data=str(data["train"]), val_data=str(data["val"]),
                  embeddings=str(data["embeddings"]), output_dir=str(out), resolution=64, batch_size=2,
                  max_steps=2, lr=1e-3, warmup_steps=0, checkpoint_every=0, validate_every=0, progress=False,
                  latent_cache=str(Path(data["train"]).parent / "latents"))
    values.update(kw)
    return TrainConfig(**values)


def trainer_for(cfg: TrainConfig, base):
    """A :class:`training.trainer.Trainer` on an already loaded base model."""
    from training.trainer import Trainer

    return Trainer(cfg, base=base)
