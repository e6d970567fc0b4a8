"""``python -m training.train_psa``: Diffusion-DPO training of a PSA adapter (``docs/reference-parity.md``).

Every option is documented in ``--help``; options may come from a JSON file (``--config``) and
the resolved configuration is written to ``OUTPUT_DIR/config.json``. The result,
``OUTPUT_DIR/psa_adapter.safetensors``, is the native format the PSA Model Patcher loads.
"""
from __future__ import annotations

import sys

import torch

from .allocator import keep_freed_memory
from .comfy_host import import_comfy
from .config import resolve_config
from .distributed import init_from_env


def main(argv: list[str] | None = None) -> int:
    cfg = resolve_config(argv)
    if cfg.malloc_tuning:
        keep_freed_memory()
    rank, world = init_from_env()  # torchrun: data-parallel over `world` processes
    import_comfy()
    from .trainer import Trainer  # noqa: PLC0415 - needs ComfyUI on sys.path first

    trainer = Trainer(cfg)
    path = trainer.train()
    if rank == 0:
        print(f"adapter written: {path}" + (f" ({world} processes)" if world > 1 else ""))
        if trainer.val_set is not None:
            print(f"held-out implicit accuracy: {trainer.evaluate()['accuracy']:.3f}")
    if world > 1:
        torch.distributed.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
