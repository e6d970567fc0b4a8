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
