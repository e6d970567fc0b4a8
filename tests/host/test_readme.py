"""The README's command blocks: each runs here (in a scratch home folder) or names the test that runs it.

A ``bash`` block is preceded by ``<!-- readme-test: run -->``, by ``<!-- readme-test: covered by
tests/FILE.py::TEST -->`` (a test that runs the same command on the fixtures) or by
``<!-- readme-test: not run (REASON) -->``. The "run" blocks execute in order with ``HOME`` set to a
scratch folder holding stand-ins for the published files the README names.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from devkit.random_adapters import random_adapter
from psa_model.adapter.layer_map import architecture
from psa_model.adapter.modules import AdapterConfig
from psa_model.formats.adapter_file import read_adapter_tensors, save_reference_bin

REPO = Path(__file__).resolve().parents[2]
BLOCK = re.compile(r"(?:<!-- readme-test: (?P<marker>.*?) -->\n)?```bash\n(?P<code>.*?)```", re.S)


def readme_blocks() -> list[tuple[str | None, str]]:
    return [(m["marker"], m["code"]) for m in BLOCK.finditer((REPO / "README.md").read_text())]


def test_every_block_says_how_it_is_tested():
    blocks = readme_blocks()
    assert blocks
    for marker, code in blocks:
        assert marker, f"README block without a readme-test marker:\n{code}"
        if marker.startswith("covered by "):
            file, test = marker.removeprefix("covered by ").split("::")
            assert f"def {test}(" in (REPO / file).read_text(), marker
        else:
            assert marker == "run" or re.fullmatch(r"not run \(.+\)", marker), marker


@pytest.fixture()
def home(tmp_path, shared_dir_or_none) -> Path:
    """Stand-ins for what a user downloads: a Sage embedding and the published SD1.5 adapter layout."""
    embeddings = tmp_path / "PSAlign" / "data" / "embeddings"
    embeddings.mkdir(parents=True)
    source = shared_dir_or_none / "data" / "sage_embeddings" / "0000002.npy" if shared_dir_or_none else None
    if source is not None and source.is_file():
        (embeddings / "0000002.npy").write_bytes(source.read_bytes())
    else:
        np.save(embeddings / "0000002.npy", np.random.default_rng(2).standard_normal(3584).astype(np.float32))
    bin_path = tmp_path / "PSAlign" / "trained_models" / "psa-sd15" / "psa_adapter.bin"
    bin_path.parent.mkdir(parents=True)
    sites = len(architecture("sd15").sites)
    adapter = random_adapter(AdapterConfig(arch="sd15", layer_dims=(320,) * sites, embed_dim=64), seed=3)
    save_reference_bin(adapter.state_dict(), bin_path)
    return tmp_path


@pytest.fixture()
def shared_dir_or_none() -> Path | None:
    from conftest import SHARED_DIR

    return SHARED_DIR if (SHARED_DIR / "data").is_dir() else None


def test_the_run_blocks_work(comfy_host, home):
    env = {**os.environ, "HOME": str(home), "PSA_PYTHON": sys.executable, "COMFYUI_PATH": str(comfy_host),
           "PSA_LINK_PACK": "0"}
    ran = 0
    for marker, code in readme_blocks():
        if marker != "run":
            continue
        result = subprocess.run(["bash", "-euo", "pipefail", "-c", code], cwd=REPO, env=env, capture_output=True,
                                text=True, timeout=300)
        assert result.returncode == 0, f"{code}\n--- stdout\n{result.stdout[-2000:]}\n--- stderr\n{result.stderr[-3000:]}"
        assert "Traceback" not in result.stderr
        ran += 1
        if "--help" in code:
            assert result.stdout.count("usage:") == code.count("--help")
        if "teen.json" in code:
            assert "teen" in result.stdout and "Violence" in result.stdout
    assert ran >= 3
    converted = home / "ComfyUI" / "models" / "psa_adapters" / "psa_sd15.safetensors"
    source, _ = read_adapter_tensors(home / "PSAlign" / "trained_models" / "psa-sd15" / "psa_adapter.bin")
    written, meta = read_adapter_tensors(converted)
    assert meta.get("psa_format") == "psa-native"
    assert set(written) == set(source) and all(torch.equal(written[k], source[k]) for k in source)
