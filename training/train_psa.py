"""``python -m training.train_psa``: Diffusion-DPO training of a PSA adapter (README, "Training").

Every option is documented in ``--help``; options may come from a JSON file (``--config``) and
the resolved configuration is written to ``OUTPUT_DIR/config.json``. The result,
``OUTPUT_DIR/psa_adapter.safetensors``, is the native format the PSA Model Patcher loads.
Problems with the user's inputs (options, data, checkpoint, resume folder) end as one
``error:`` line and exit status 2; ``PSA_TRACEBACK=1`` shows the traceback instead.
"""
from __future__ import annotations

import os
import sys

import torch

from psa_model.formats.adapter_file import AdapterFormatError

from .allocator import keep_freed_memory
from .comfy_host import import_comfy
from .checkpoint import ResumeError
from .config import build_parser, resolve_config
from .data import DataValidationError
from .distributed import init_from_env
from .model import ModelMismatchError

# Errors in what the user gave (data, files, options) rather than in the program.
USER_ERRORS = (DataValidationError, ResumeError, ModelMismatchError, AdapterFormatError, FileNotFoundError)


def main(argv: list[str] | None = None) -> int:
    cfg = resolve_config(argv)
    try:
        return _train(cfg)
    except USER_ERRORS as exc:
        if os.environ.get("PSA_TRACEBACK"):
            raise
        build_parser().error(str(exc))


def _train(cfg) -> int:
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
