"""Benchmark 4: switching the profile on a live ComfyUI server costs nothing extra.

A real server (``scripts/comfy_server.py``, ``main.py --cpu``) with the tiny SD1.5 fixture,
a demo adapter and demo profiles runs the shipped ``psa_sd15_basic`` graph with
``PSA Load Profile`` as the profile source. Every run has a new seed (so the sampler always
runs); each cycle is: profile B after A (a switch), A after B (a switch back), A after A (a
rerun). The ratio pairs each A→B run with the A→A rerun of its cycle. Times are the server's
own (``execution_start`` → ``execution_success`` message timestamps), and the server log is
checked for model loads after the warm-up.
"""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

from .timing import quartiles

REPO_ROOT = Path(__file__).resolve().parent.parent
_LOAD_PATTERNS = (r"model_type ", r"Requested to load", r"loaded completely", r"loaded partially")


def _graph(profile: str, seed: int, size: int, steps: int) -> dict:
    graph = json.loads((REPO_ROOT / "workflows" / "api" / "psa_sd15_basic.json").read_text())
    graph["1"]["inputs"]["ckpt_name"] = "sd15_tiny.safetensors"
    graph["2"]["inputs"]["adapter_name"] = "psa_demo_sd15.safetensors"
    graph["5"] = {"class_type": "PSALoadProfile", "inputs": {"profile_name": profile}}
    graph["6"]["inputs"].update(width=size, height=size)
    graph["7"]["inputs"].update(seed=seed, steps=steps)
    graph["9"] = {"class_type": "PreviewImage", "inputs": {"images": ["8", 0]}}
    return graph


def _execution_seconds(entry: dict) -> float:
    stamps = {kind: data.get("timestamp") for kind, data in entry["status"]["messages"]}
    return (stamps["execution_success"] - stamps["execution_start"]) / 1000.0


def bench_profile_switch(quick: bool, work: Path) -> dict:
    from scripts.build_fixtures import ensure_fixtures
    from scripts.comfy_server import ComfyServer
    from scripts.demo_models import prepare_models_dir
    from training.comfy_host import comfyui_path

    fixtures = ensure_fixtures(REPO_ROOT / ".cache" / "fixtures")
    models_dir = prepare_models_dir(work / "models", {"sd15_tiny.safetensors": fixtures["sd15_tiny.safetensors"]})
    a, b = "demo_child.json", "demo_adult.json"
    size, steps, cycles = (64, 4, 5) if quick else (64, 10, 6)
    seed = iter(range(1000, 2000))
    times: dict[str, list[float]] = {"A_after_B": [], "B_after_A": [], "A_after_A": []}
    with ComfyServer(comfyui_path(), python=sys.executable, models_dir=models_dir, work_dir=work / "server",
                     start_timeout=900.0) as server:
        for profile in (a, b, a):  # warm-up: model loaded, both profiles seen once
            server.run(_graph(profile, next(seed), size, steps), timeout=1800)
        log_mark = len(server.log_text())
        for _ in range(cycles):
            for key, profile in (("B_after_A", b), ("A_after_B", a), ("A_after_A", a)):
                times[key].append(_execution_seconds(server.run(_graph(profile, next(seed), size, steps), timeout=1800)))
        log = server.log_text()[log_mark:]
    loads = [line for line in log.splitlines() if any(re.search(p, line) for p in _LOAD_PATTERNS)]
    ratios = [s / r for s, r in zip(times["B_after_A"], times["A_after_A"])]
    q1, med, q3 = quartiles(ratios)
    return {"model": "sd15 tiny fixture, demo adapter", "image": size, "steps": steps, "cycles": cycles,
            "median_s": {k: round(quartiles(v)[1], 3) for k, v in times.items()},
            "ratio": round(med, 3), "ratio_q1_q3": [round(q1, 3), round(q3, 3)],
            "model_loads_after_warmup": len(loads), "load_log_lines": loads[:5],
            "target": "switch / rerun <= 1.05 and no model load in the log",
            "met": med <= 1.05 and not loads}
