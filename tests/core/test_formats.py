"""Adapter file formats: reference ↔ native round trips, safe loading, metadata (pure torch)."""
from __future__ import annotations

import os
import pickle
import subprocess
import sys

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from psa_model.formats.convert import main as convert_main
from psa_model.formats.adapter_file import AdapterFormatError, load_adapter, read_adapter_tensors
from psa_model.adapter.layer_map import ARCHITECTURES

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def reference_dict(arch: str = "sd15", c: int = 768, e: int = 48, dtype=torch.float16, width: int = 32):
    """A reference-layout adapter written independently of psa_model (layout from the note §3)."""
    gen = torch.Generator().manual_seed(0)
    n = len(ARCHITECTURES[arch].sites)
    layers = {}
    for i in range(n):
        layers[f"{i}.to_k_user.0.weight"] = torch.randn(width, c, generator=gen).to(dtype)
        layers[f"{i}.to_v_user.0.weight"] = torch.randn(width, c, generator=gen).to(dtype)
    proj = {"proj.weight": torch.randn(c, e, generator=gen).to(dtype), "proj.bias": torch.randn(c, generator=gen).to(dtype),
            "norm.weight": torch.randn(c, generator=gen).to(dtype), "norm.bias": torch.randn(c, generator=gen).to(dtype)}
    return {"psa_adapter": layers, "user_proj": proj}


def _assert_same(a: dict, b: dict):
    assert a.keys() == b.keys()
    for group in a:
        assert a[group].keys() == b[group].keys()
        for k in a[group]:
            assert a[group][k].dtype == b[group][k].dtype and torch.equal(a[group][k], b[group][k]), (group, k)


@pytest.mark.parametrize("arch, c", [("sd15", 768), ("sdxl", 2048)])
def test_reference_to_native_to_reference_is_bit_exact(tmp_path, arch, c):
    original = reference_dict(arch, c)
    torch.save(original, tmp_path / "psa_adapter.bin")
    assert convert_main([str(tmp_path / "psa_adapter.bin"), str(tmp_path / "native.safetensors")]) == 0
    assert convert_main([str(tmp_path / "native.safetensors"), str(tmp_path / "back.bin")]) == 0
    _assert_same(original, torch.load(tmp_path / "back.bin", weights_only=True))
    with safe_open(str(tmp_path / "native.safetensors"), framework="pt") as fh:
        meta = fh.metadata()
    assert meta["psa_format"] == "psa-native" and meta["arch"] == arch
    assert meta["embed_dim"] == "48" and meta["user_tokens"] == "1" and meta["cross_attention_dim"] == str(c)


def test_reference_safetensors_variant_loads_like_the_bin(tmp_path):
    original = reference_dict()
    torch.save(original, tmp_path / "psa_adapter.bin")
    flat = {f"{g}.{k}": v for g, items in original.items() for k, v in items.items()}
    save_file(flat, str(tmp_path / "psa_adapter.safetensors"))
    a, _ = read_adapter_tensors(tmp_path / "psa_adapter.bin")
    b, _ = read_adapter_tensors(tmp_path / "psa_adapter.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    adapter = load_adapter(tmp_path / "psa_adapter.safetensors")
    assert adapter.config.arch == "sd15" and adapter.config.embed_dim == 48 and adapter.config.user_tokens == 1


class _Exploit:
    def __reduce__(self):
        return (os.system, ("touch PWNED_BY_PICKLE",))


def test_pickled_code_is_never_executed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with open("psa_adapter.bin", "wb") as fh:
        pickle.dump({"psa_adapter": {}, "user_proj": _Exploit()}, fh)
    with pytest.raises(AdapterFormatError, match="refusing"):
        load_adapter(tmp_path / "psa_adapter.bin")
    assert not (tmp_path / "PWNED_BY_PICKLE").exists()


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d["psa_adapter"].pop("3.to_v_user.0.weight"), "missing"),
    (lambda d: [d["psa_adapter"].pop(k) for k in list(d["psa_adapter"]) if k.startswith("15.")], "no known architecture"),
    (lambda d: d.pop("user_proj"), "expected groups"),
])
def test_inconsistent_reference_files_are_rejected(tmp_path, mutate, message):
    data = reference_dict()
    mutate(data)
    torch.save(data, tmp_path / "psa_adapter.bin")
    with pytest.raises((AdapterFormatError, ValueError), match=message):
        load_adapter(tmp_path / "psa_adapter.bin")


def test_layer_tables_match_the_reference_counts():
    from psa_model.adapter.modules import AdapterConfig, PSAAdapter

    counts = {}
    for name, arch in ARCHITECTURES.items():
        adapter = PSAAdapter(AdapterConfig(name, arch.reference_inner_dims))
        counts[name] = (len(arch.sites), sum(p.numel() for p in adapter.parameters()))
    assert counts["sd15"][0] == 16 and abs(counts["sd15"][1] / 1e6 - 21.9) < 0.05  # note §3: ≈ 21.9 M
    assert counts["sdxl"][0] == 70 and abs(counts["sdxl"][1] / 1e6 - 348) < 0.5  # note §3: ≈ 348 M


def test_core_imports_no_comfyui():
    code = ("import sys, pkgutil, importlib, psa_model\n"
            "for m in pkgutil.iter_modules(psa_model.__path__):\n"
            "    importlib.import_module('psa_model.' + m.name)\n"
            "bad = [m for m in sys.modules if m.split('.')[0] in ('comfy', 'folder_paths', 'nodes', 'comfy_extras')]\n"
            "assert not bad, bad\n")
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, timeout=120)
