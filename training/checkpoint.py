"""Resumable checkpoints written atomically (README: Training).

A checkpoint is a folder ``step_{N}`` with ``adapter.safetensors`` (native format) and
``state.pt`` (optimizer, scheduler, RNG states, step, data-order state, run fingerprint). It is
assembled in a temporary sibling folder and renamed into place, so a crash or a full disk
never leaves a partial checkpoint under the final name and never touches earlier ones.
"""
from __future__ import annotations

import io
import os
import random
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch

from psa_model.formats.adapter_file import atomic_write_bytes, save_native
from psa_model.adapter.modules import PSAAdapter


class ResumeError(ValueError):
    """A resume folder is missing, incomplete or from a different run configuration."""


def rng_states(generator: torch.Generator) -> dict:
    return {"trainer": generator.get_state(), "torch": torch.get_rng_state(), "numpy": np.random.get_state(),
            "python": random.getstate(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def restore_rng(states: dict, generator: torch.Generator) -> None:
    generator.set_state(states["trainer"])
    torch.set_rng_state(states["torch"])
    np.random.set_state(states["numpy"])
    random.setstate(states["python"])
    if states.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def save_checkpoint(folder: Path, adapter: PSAAdapter, state: dict, training_meta: dict) -> Path:
    """Write ``folder`` atomically (temporary folder + rename); returns it."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".tmp", dir=folder.parent))
    try:
        save_native(adapter, tmp / "adapter.safetensors", training=training_meta)
        buf = io.BytesIO()
        torch.save(state, buf)
        atomic_write_bytes(tmp / "state.pt", buf.getvalue())
        if folder.exists():  # re-writing the same step (e.g. after a resume): replace it whole
            old = folder.with_name(f".{folder.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(folder, old)
            os.replace(tmp, folder)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


def _state_globals() -> list:
    """The only non-tensor types a state.pt holds: numpy's RNG state array (see :func:`rng_states`)."""
    sample = np.zeros(1, dtype=np.uint32)
    return [sample.__reduce__()[0], np.ndarray, np.dtype, type(sample.dtype)]


def load_checkpoint(folder: str | Path, fingerprint: str) -> tuple[Path, dict]:
    """(adapter file, state) of a checkpoint folder made by a run with the same configuration."""
    folder = Path(folder)
    adapter_file, state_file = folder / "adapter.safetensors", folder / "state.pt"
    if not adapter_file.is_file() or not state_file.is_file():
        raise ResumeError(f"{folder} is not a complete PSA training checkpoint (adapter.safetensors and state.pt)")
    try:
        with torch.serialization.safe_globals(_state_globals()):
            state = torch.load(state_file, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any failure means: not a state this trainer wrote
        raise ResumeError(f"{state_file}: not a training state written by this trainer ({exc.__class__.__name__}). "
                          "It is read without running code, so a state.pt holding other Python objects is refused; "
                          "resume only from checkpoints of your own runs") from None
    if not isinstance(state, dict):
        raise ResumeError(f"{state_file}: not a training state written by this trainer (not a dict)")
    if state.get("run_fingerprint") != fingerprint:
        raise ResumeError(
            f"{folder} was written by a different run configuration (fingerprint {state.get('run_fingerprint')} "
            f"≠ {fingerprint}; differing options: {state.get('config_diff_hint', 'see its config.json')}). "
            "Resume only with the options of the original run (max_steps, output and logging may change).")
    return adapter_file, state


def latest_checkpoint(output_dir: Path) -> Path | None:
    root = Path(output_dir) / "checkpoints"
    steps = sorted((int(p.name.split("_")[1]), p) for p in root.glob("step_*") if p.name.split("_")[1].isdigit())
    return steps[-1][1] if steps else None
