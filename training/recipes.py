"""Named training recipes (``--recipe``): option values applied before a config file and the CLI.

``pack`` is the dataclass defaults (this project's recipe). ``reference-sd15`` and
``reference-sdxl`` reproduce the reference launch scripts' runs option by option; every value
and the reasoning behind it is in ``docs/reference-parity.md`` ("Training recipes"). Values given
in a ``--config`` file or on the command line override a recipe's.

The reference ran each script as 4 data-parallel processes; the batch size and accumulation
below are per process, so one process gets a quarter of its global batch unless it is run
with ``torchrun --nproc_per_node 4`` or with ``--grad-accum`` and ``--loss-divisor`` both
multiplied by 4. Its launch scripts ask for 8 (SD1.5) / 16 (SDXL) accumulation steps; what its
loop does with them is derived in :func:`training.accumulation.nested_accumulate_cadence`.
"""
from __future__ import annotations

from .accumulation import nested_accumulate_cadence

# (micro-batches per optimiser step, loss divisor): two nested accumulate contexts per micro-batch
_SD15_ACCUM, _SD15_DIVISOR = nested_accumulate_cadence(8, contexts=2)   # (4, 8)
_SDXL_ACCUM, _SDXL_DIVISOR = nested_accumulate_cadence(16, contexts=2)  # (8, 16)

_REFERENCE_COMMON = {
    "max_steps": 5000,
    "lr": 5e-6,
    "warmup_steps": 500,  # the reference multiplies its 500 by the process count and steps per process
    "weight_decay": 1e-2,
    "max_grad_norm": 1.0,
    "beta": 5000.0,
    "min_timestep": 0,
    "max_timestep": 1000,
    "precision": "bf16",
    "ref_precision": "bf16",  # the frozen reference UNet in bf16 with bf16 inputs and errors
    "projection_dtype": "bf16",  # the user projection is cast to bf16 and updated there
    "embedding_dtype": "fp16",  # the data set hands out fp16 embeddings (then cast to the projection's bf16)
    "vae_precision": "bf16",  # the VAE is cast to the run's bf16 before it encodes the images
    "latent_sampling": "sample",  # a fresh posterior sample at every step
    "random_flip": True,
    "independent_flips": True,  # chosen and rejected images flipped independently
    "resize_filter": "bilinear",
    "crop_rounding": "reference",  # torchvision's Resize + CenterCrop
    "caption_mode": "truncate",
    "epoch_end_step": True,  # accelerate steps on each epoch's last batch with what it has (drop_last epochs)
    "user_tokens": 1,
    "checkpoint_every": 500,
}

RECIPES: dict[str, dict] = {
    "pack": {},
    "reference-sd15": {
        **_REFERENCE_COMMON,
        "arch": "sd15",
        "resolution": 512,
        "batch_size": 6,
        "grad_accum": _SD15_ACCUM,
        "loss_divisor": _SD15_DIVISOR,
        "optimizer": "adamw",
        "caption_dropout": 0.2,
        "gradient_checkpointing": False,
    },
    "reference-sdxl": {
        **_REFERENCE_COMMON,
        "arch": "sdxl",
        "resolution": 1024,
        "batch_size": 2,
        "grad_accum": _SDXL_ACCUM,
        "loss_divisor": _SDXL_DIVISOR,
        "optimizer": "adafactor",  # the reference switches to Adafactor whenever it trains SDXL
        "caption_dropout": 0.36,  # dropped at 0.2 in the data set and again at 0.2 when encoding
        "gradient_checkpointing": True,  # always on for SDXL in the reference (memory only)
    },
}


def recipe_values(name: str) -> dict:
    """Option values of recipe ``name`` without the ``arch`` it is meant for."""
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}: use one of {sorted(RECIPES)}")
    return {k: v for k, v in RECIPES[name].items() if k != "arch"}


def recipe_arch(name: str) -> str | None:
    """The architecture a recipe is meant for ("sd15", "sdxl"), or None for any."""
    return RECIPES[name].get("arch")
