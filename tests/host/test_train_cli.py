"""A data problem found while ``python -m training.train_psa`` runs ends as one ``error:`` line, not a traceback."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_bad_data_is_an_error_line(comfy_host, tmp_path):
    split = tmp_path / "train"
    split.mkdir()
    (split / "metadata.jsonl").write_text('{"chosen": "a.jpg", "rejected": "b.jpg", "caption": "x"}\n')
    checkpoint = tmp_path / "base.safetensors"
    checkpoint.write_bytes(b"not read: the data is checked first")
    cmd = [sys.executable, "-m", "training.train_psa", "--checkpoint", str(checkpoint), "--train-data", str(split),
           "--embeddings", str(tmp_path), "--output-dir", str(tmp_path / "out")]
    result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300,
                            env={"COMFYUI_PATH": str(comfy_host), "PATH": "/usr/bin:/bin"})
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert result.stderr.strip().splitlines()[-1] == (
        f"python -m training.train_psa: error: {split / 'metadata.jsonl'}:1: missing field(s) ['user_data']")


def test_epochs_shorter_than_one_batch_are_an_error_line(comfy_host, tmp_path):
    """--epoch-end-step on fewer pairs than one global batch: refused before the checkpoint is read."""
    from support.training_helpers import make_dataset

    data = make_dataset(tmp_path / "sage", users=2, val_users=1, captions=1, val_captions=1, image_size=16)
    checkpoint = tmp_path / "base.safetensors"
    checkpoint.write_bytes(b"not read: the epoch length is checked first")
    cmd = [sys.executable, "-m", "training.train_psa", "--checkpoint", str(checkpoint), "--train-data",
           str(data["train"]), "--embeddings", str(data["embeddings"]), "--output-dir", str(tmp_path / "out"),
           "--batch-size", "4", "--epoch-end-step"]
    result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300,
                            env={"COMFYUI_PATH": str(comfy_host), "PATH": "/usr/bin:/bin"})
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-3000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("python -m training.train_psa: error: --epoch-end-step: the training data has 2 pairs, "
                           "fewer than one global batch of 4"), last


def test_a_pickled_checkpoint_is_refused_in_our_words(comfy_host, tmp_path):
    """A .ckpt whose pickle would run code: ComfyUI's safe loader refuses it; torch's advice to retry
    with weights_only=False is not passed on."""
    import pytest
    import torch

    from training.model import ModelMismatchError, load_base

    class Payload:
        def __reduce__(self):
            return (print, ("code ran",))

    checkpoint = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {"x": Payload()}}, checkpoint)
    with pytest.raises(ModelMismatchError) as info:
        load_base(checkpoint)
    assert str(info.value).startswith("evil.ckpt: ComfyUI cannot load it as a checkpoint (")
    assert "weights_only" not in str(info.value)
