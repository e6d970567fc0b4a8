"""Benchmark 5: wall time to load an adapter file and patch it onto a UNet (PSA Model Patcher's work).

Adapters have the full-size SD1.5 and SDXL layer widths (``reference_inner_dims``) and random
fp32 weights, written in both formats: native ``.safetensors`` and the reference ``.bin``.
The UNet is a full-size one on the ``meta`` device (patching reads only its ``attn2`` widths).
Files are read warm from the page cache (written just before), as a server reads an adapter
it has seen; the I/O floor (reading the same file's tensors and nothing else) is timed in the
same pairs, so the ratio shows what loading adds beyond reading.
"""
from __future__ import annotations

import gc
from pathlib import Path

import torch
from safetensors.torch import load

from devkit.random_adapters import random_adapter
from psa_model.adapter.layer_map import architecture
from psa_model.adapter.modules import AdapterConfig
from psa_model.adapter.patch import attach_adapter
from psa_model.formats.adapter_file import load_adapter, save_native, save_reference_bin
from psa_model.scratch import claim, remove

from . import models
from .timing import paired_runs, quartiles, ratio_summary

TARGET_S = {"sd15": 0.5, "sdxl": 3.0}


def _raw_read(path: Path) -> None:
    if path.suffix == ".bin":
        torch.load(str(path), map_location="cpu", weights_only=True)
    else:
        load(path.read_bytes())  # every tensor read into memory (the fastest way found here)


def bench_adapter_load(quick: bool, work: Path) -> dict:
    claim(work, "the adapter-load benchmark's scratch folder")
    results = []
    for arch in (["sd15"] if quick else ["sd15", "sdxl"]):
        unet = models.meta_unet(arch)
        config = AdapterConfig(arch=arch, layer_dims=architecture(arch).reference_inner_dims,
                               embed_dim=models.REFERENCE_EMBED_DIM)
        adapter = random_adapter(config, seed=1)
        params = sum(p.numel() for p in adapter.parameters())
        files = {"native": work / f"psa_{arch}.safetensors", "reference_bin": work / f"psa_{arch}.bin"}
        save_native(adapter, files["native"])
        save_reference_bin(adapter.state_dict(), files["reference_bin"])
        del adapter
        gc.collect()
        for fmt, path in files.items():
            times = paired_runs({"load_and_patch": lambda p=path: attach_adapter(unet, load_adapter(p)),
                                 "read_only": lambda p=path: _raw_read(p)}, repeats=5)
            summary = ratio_summary(times, "read_only")
            q1, med, q3 = quartiles(times["load_and_patch"])
            results.append({"arch": arch, "format": fmt, "file_mb": round(path.stat().st_size / 2**20, 1),
                            "parameters_m": round(params / 1e6, 1), "load_and_patch_s": round(med, 3),
                            "load_and_patch_s_q1_q3": [round(q1, 3), round(q3, 3)],
                            "read_only_s": summary["read_only"]["median_s"],
                            "ratio_to_read_only": summary["load_and_patch"]["ratio"],
                            "ratio_q1_q3": [summary["load_and_patch"]["ratio_q1"], summary["load_and_patch"]["ratio_q3"]],
                            "target_s": TARGET_S[arch], "met": med <= TARGET_S[arch]})
            gc.collect()
        for path in files.values():
            remove(path, work)
    return {"cases": results, "met": all(r["met"] for r in results)}
