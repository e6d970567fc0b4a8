"""The main job's command line with real paths and names, any number of profiles; validation errors read well."""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from devkit.comfy_server import PromptRejected
from devkit.workflows import shipped_workflows, substitute
from training.comfy_host import REPO_ROOT


def test_run_demo_takes_paths_and_any_number_of_profiles(comfy_host, server_models_dir, fixture_paths, tmp_path):
    profiles = server_models_dir / "psa_profiles"
    out = tmp_path / "out"
    # Names inside --models-dir and paths, mixed; four profiles (one twice) → one row of four tiles.
    cmd = [sys.executable, "-m", "scripts.run_demo", "--models-dir", str(server_models_dir),
           "--checkpoint", str(fixture_paths["sd15_tiny.safetensors"]),
           "--adapter", "psa_demo_sd15.safetensors",
           "--profiles", "demo_child.json", str(profiles / "demo_adult.npy"), str(profiles / "demo_teen.json"),
           "demo_child.json", "--size", "64", "--steps", "2", "--output", str(out)]
    result = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=900,
                            env={**os.environ, "COMFYUI_PATH": str(comfy_host)})
    assert result.returncode == 0, result.stderr[-3000:]
    assert "embedded default" not in result.stdout
    (png,) = sorted(out.glob("*.png"))
    grid = np.asarray(Image.open(io.BytesIO(png.read_bytes())).convert("RGB"))
    assert grid.shape == (64, 4 * 64 + 3 * 4, 3)  # four tiles side by side, 4 px white gaps
    assert all(grid[:, i * 68: i * 68 + 64].std() > 1.0 for i in range(4))  # four rendered tiles, none blank
    assert (grid[:, 64:68] == 255).all()  # the white gap between the first two


def test_a_rejected_workflow_names_node_input_and_reason(comfy_server):
    api = json.loads(shipped_workflows()["psa_sd15_basic"][1].read_text())
    prompt = substitute(api, "sd15_tiny.safetensors", "missing_adapter.safetensors", ["demo_child.json"], 64, 2)
    with pytest.raises(PromptRejected) as exc:
        comfy_server.queue(prompt)
    message = str(exc.value)
    assert "node 2 (PSAModelPatcher), input 'adapter_name'" in message
    assert "'missing_adapter.safetensors' is not in models/psa_adapters" in message
    assert '{"' not in message and "HTTP" not in message  # not the raw answer body
