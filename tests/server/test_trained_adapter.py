"""An adapter written by ``python -m training.train_psa`` runs unchanged in a shipped workflow."""
from __future__ import annotations

import json
import subprocess
import sys

from devkit.workflows import shipped_workflows, substitute
from support.training_helpers import make_dataset
from training.comfy_host import REPO_ROOT


def test_trained_adapter_runs_in_the_sd15_workflow(comfy_server, server_models_dir, fixture_paths, tmp_path):
    data = make_dataset(tmp_path / "data", embed_dim=3584)  # the published embedding size, like the demo profiles
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "training.train_psa", "--checkpoint", str(fixture_paths["sd15_tiny.safetensors"]),
           "--train-data", str(data["train"]), "--embeddings", str(data["embeddings"]), "--output-dir", str(out),
           "--resolution", "64", "--batch-size", "2", "--max-steps", "2", "--lr", "1e-3", "--warmup-steps", "0",
           "--checkpoint-every", "0", "--validate-every", "0", "--no-progress"]
    result = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    target = server_models_dir / "psa_adapters" / "trained_by_train_psa.safetensors"
    target.write_bytes((out / "psa_adapter.safetensors").read_bytes())

    api = json.loads(shipped_workflows()["psa_sd15_basic"][1].read_text())
    prompt = substitute(api, "sd15_tiny.safetensors", target.name, ["demo_teen.json"], size=64, steps=2)
    images = comfy_server.images(comfy_server.run(prompt, timeout=300))
    assert len(images) == 1 and images[0][:8] == b"\x89PNG\r\n\x1a\n"
