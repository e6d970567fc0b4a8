"""Benchmark 4: switching the profile on a live ComfyUI server costs nothing extra.

A real server (``devkit/comfy_server.py``, ``main.py --cpu``) with the tiny SD1.5 fixture,
a demo adapter and demo profiles runs the shipped ``psa_sd15_basic`` graph with
``PSA Load Profile`` as the profile source. Every run has a new seed (so the sampler always
runs); each cycle is: a stock KSampler run on the same checkpoint (the control), profile A
after it, B after A (a switch), A after B (a switch back), A after A (a rerun). The ratio pairs
each B-after-A run with the A-after-A rerun of its cycle: both follow a PSA run, so neither
re-executes PSA Model Patcher (ComfyUI drops the cached outputs of nodes that the stock graph
lacks, so the run after the control does). Times are the server's own (``execution_start`` →
``execution_success`` message timestamps).

The server log after the warm-up is split per run and searched for two kinds of line
(docs/benchmarks.md, "4. Profile switch"): ComfyUI's ``Requested to load <Model>`` notice, which
``model_management.load_models_gpu`` prints whenever the MODEL object handed to a sampler is not
the one it last loaded (PSA KSampler samples a per-run clone that carries the profile), and the
lines it prints only when weights are actually loaded or re-patched (``loaded completely`` /
``loaded partially`` from ``ModelPatcher.load``, ``model_type`` from a checkpoint load). A
clone that shares its parent's weight patches (same ``patches_uuid``) on an already loaded
model returns from ``ModelPatcher.partially_load`` before ``load`` and moves no weight.
"""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

from devkit.comfy_server import ComfyServer
from training.comfy_host import comfyui_path

from .timing import quartiles

REPO_ROOT = Path(__file__).resolve().parent.parent
_WEIGHT_LOAD = re.compile(r"model_type |loaded completely|loaded partially|unloaded")
_REQUESTED = re.compile(r"Requested to load")


def _graph(profile: str | None, seed: int, size: int, steps: int) -> dict:
    graph = json.loads((REPO_ROOT / "workflows" / "api" / "psa_sd15_basic.json").read_text())
    graph["1"]["inputs"]["ckpt_name"] = "sd15_tiny.safetensors"
    graph["2"]["inputs"]["adapter_name"] = "psa_demo_sd15.safetensors"
    graph["5"] = {"class_type": "PSALoadProfile", "inputs": {"profile_name": profile}}
    graph["6"]["inputs"].update(width=size, height=size)
    graph["7"]["inputs"].update(seed=seed, steps=steps)
    graph["9"] = {"class_type": "PreviewImage", "inputs": {"images": ["8", 0]}}
    if profile is None:  # the control: stock KSampler on the checkpoint's MODEL, no PSA node
        sampler = graph["7"]["inputs"]
        graph["7"] = {"class_type": "KSampler", "inputs": {
            k: sampler[k] for k in ("seed", "steps", "cfg", "sampler_name", "scheduler", "positive", "negative",
                                    "latent_image", "denoise")} | {"model": ["1", 0]}}
        del graph["2"], graph["5"]
    return graph


def _execution_seconds(entry: dict) -> float:
    stamps = {kind: data.get("timestamp") for kind, data in entry["status"]["messages"]}
    return (stamps["execution_success"] - stamps["execution_start"]) / 1000.0


def bench_profile_switch(quick: bool, work: Path) -> dict:
    from devkit.demo_models import prepare_models_dir  # noqa: PLC0415 - heavy (torch): keeps this module light to import
    from devkit.fixtures import ensure_fixtures  # noqa: PLC0415 - heavy (torch): keeps this module light to import

    fixtures = ensure_fixtures(REPO_ROOT / ".cache" / "fixtures")
    models_dir = prepare_models_dir(work / "models", {"sd15_tiny.safetensors": fixtures["sd15_tiny.safetensors"]})
    a, b = "demo_child.json", "demo_adult.json"
    size, steps, cycles = (64, 4, 5) if quick else (64, 10, 6)
    seed = iter(range(1000, 2000))
    kinds = ("stock", "A_after_stock", "B_after_A", "A_after_B", "A_after_A")
    times: dict[str, list[float]] = {k: [] for k in kinds}
    requested = {k: 0 for k in kinds}
    weight_loads: list[str] = []
    with ComfyServer(comfyui_path(), python=sys.executable, models_dir=models_dir, work_dir=work / "server",
                     start_timeout=900.0) as server:
        for profile in (a, b, a, None):  # warm-up: model loaded, both profiles and the stock graph seen once
            server.run(_graph(profile, next(seed), size, steps), timeout=1800)
        for _ in range(cycles):
            for key, profile in zip(kinds, (None, a, b, a, a)):
                mark = len(server.log_text())
                times[key].append(_execution_seconds(server.run(_graph(profile, next(seed), size, steps), timeout=1800)))
                lines = server.log_text()[mark:].splitlines()
                requested[key] += sum(1 for line in lines if _REQUESTED.search(line))
                weight_loads += [f"{key}: {line}" for line in lines if _WEIGHT_LOAD.search(line)]
    ratios = [s / r for s, r in zip(times["B_after_A"], times["A_after_A"])]
    q1, med, q3 = quartiles(ratios)
    stock = [p / s for p, s in zip(times["A_after_A"], times["stock"])]
    return {"model": "sd15 tiny fixture, demo adapter", "image": size, "steps": steps, "cycles": cycles,
            "median_s": {k: round(quartiles(v)[1], 3) for k, v in times.items()},
            "ratio": round(med, 3), "ratio_q1_q3": [round(q1, 3), round(q3, 3)],
            "psa_rerun_over_stock": round(quartiles(stock)[1], 3),
            "requested_to_load_lines_per_run": {k: round(v / cycles, 2) for k, v in requested.items()},
            "weight_loads_after_warmup": len(weight_loads), "weight_load_lines": weight_loads[:5],
            "target": "switch / rerun <= 1.05 and no weight (re)load in the log after the warm-up",
            "met": med <= 1.05 and not weight_loads}
