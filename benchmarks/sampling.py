"""Sampling benchmarks 1–3: PSA's overhead on a stock KSampler, its scaling, many users per batch.

Overhead and scaling use *interleaved steps*: one KSampler run (euler, normal schedule, CFG)
whose every model call is evaluated once per variant (stock, PSA, reference-style, ...) in a
rotating order, on the same inputs; the sampler continues from the stock output. Each step is a
paired repeat, so a 10-step run gives 9 pairs after the first (warm-up) step, measured seconds
apart instead of a whole sample apart. The per-sample cost outside the model calls (PSA Apply
Profile's projection of the profile) is measured separately (``setup``).
"""
from __future__ import annotations

import statistics
import time

import torch

from psa_model.adapter.patch import attach_adapter, attach_profile, installed_adapter

from . import models
from .timing import paired_runs, quartiles, ratio_summary

_VARIANT_KEYS = ("patches", "patches_replace", "psa_adapter", "psa_user")
SCALING_UNET = dict(channels=64, mult=(1, 2, 4, 4))  # SD1.5 layout at 1/5 width (scaling, many users, --quick)


class Interleaved:
    """A ``model_function_wrapper`` running every variant's UNet on each call, timing each."""

    def __init__(self, variants: dict) -> None:
        self.names = list(variants)
        self.options = {n: dict(m.model_options.get("transformer_options", {})) for n, m in variants.items()}
        self.times: dict[str, list[float]] = {n: [] for n in self.names}
        self.sigmas: list[float] = []
        self.calls = 0

    def __call__(self, apply_model, args: dict) -> torch.Tensor:
        c = args["c"]
        self.sigmas.append(float(args["timestep"].max()))
        dynamic = {k: v for k, v in c["transformer_options"].items() if k not in _VARIANT_KEYS}
        shift = self.calls % len(self.names)
        outputs = {}
        for name in self.names[shift:] + self.names[:shift]:
            call = dict(c, transformer_options={**dynamic, **self.options[name]})
            started = time.perf_counter()
            outputs[name] = apply_model(args["input"], args["timestep"], **call)
            self.times[name].append(time.perf_counter() - started)
        self.calls += 1
        return outputs[self.names[0]]


def interleaved_sample(base, variants: dict, arch: str, batch: int, size: int, steps: int, cfg: float = 7.0,
                       seed: int = 0) -> dict[str, list[float]]:
    """Per-call seconds of each variant (first step dropped) over one KSampler run on ``base``."""
    import comfy.sample  # noqa: PLC0415 - ComfyUI is importable only after import_comfy()

    wrapper = Interleaved(variants)
    sampler_model = base.clone()
    sampler_model.set_model_unet_function_wrapper(wrapper)
    pos, neg = models.conditioning(arch)
    latent = torch.zeros(batch, 4, size, size)
    noise = torch.randn(latent.shape, generator=torch.Generator().manual_seed(seed))
    comfy.sample.sample(sampler_model, noise, steps, cfg, "euler", "normal", pos, neg, latent, disable_pbar=True,
                        seed=seed)
    if wrapper.calls < steps:
        raise RuntimeError(f"expected at least one model call per step ({steps}), got {wrapper.calls}")
    for name, m in variants.items():
        patch = installed_adapter(m.model_options)
        if patch is not None and patch.calls == 0:
            raise RuntimeError(f"variant {name}: the PSA layers never ran")
    # The first step is the warm-up (ComfyUI may split cond and uncond into two calls when memory is short).
    keep = [i for i, sigma in enumerate(wrapper.sigmas) if sigma != wrapper.sigmas[0]]
    return {n: [t[i] for i in keep] for n, t in wrapper.times.items()}


def _setup_seconds(psa_base, embeddings: torch.Tensor, repeats: int) -> tuple[float, float, float]:
    """PSA Apply Profile's per-sample work (profile projection through the adapter), quartiles."""
    times = []
    for _ in range(repeats + 1):
        started = time.perf_counter()
        attach_profile(psa_base, embeddings, 1.0)
        times.append(time.perf_counter() - started)
    return quartiles(times[1:])


def overhead_case(label: str, base, arch: str, size: int, steps: int, multi_tokens: int) -> dict:
    """Benchmark 1 on one model: stock vs PSA (T = 1 and T = ``multi_tokens``) vs reference-style."""
    single = models.adapter_for(base, arch, 1)
    multi = models.adapter_for(base, arch, multi_tokens)
    emb = models.profiles(1)
    variants = {"stock": base, "psa_t1": models.psa_model(base, single, emb),
                f"psa_t{multi_tokens}": models.psa_model(base, multi, emb),
                "reference_style_t1": models.reference_style_model(base, single, emb)}
    times = interleaved_sample(base, variants, arch, 1, size, steps)
    summary = ratio_summary(times, "stock")
    setup = _setup_seconds(attach_adapter(base, single), emb, 5)
    stock_sample = statistics.median(times["stock"]) * steps
    return {"model": label, "arch": arch, "latent": size, "batch": 1, "steps": steps, "cfg": 7.0,
            "variants": summary, "setup_s_median": round(setup[1], 4),
            "setup_share_of_stock_sample": round(setup[1] / stock_sample, 5),
            "psa_t1_per_sample_ratio": round(summary["psa_t1"]["ratio"] + setup[1] / stock_sample, 4)}


def bench_overhead(quick: bool) -> dict:
    """Benchmark 1: full-size SD1.5-shaped UNet at 32×32 and the SDXL fixture at 16×16 (10 steps, cfg 7)."""
    cases = []
    if quick:
        cases.append(overhead_case("sd15 layout, model_channels 64", models.sd15_unet(**SCALING_UNET), "sd15", 16, 6, 4))
        cases.append(overhead_case("sdxl tiny fixture", models.fixture_model("sdxl"), "sdxl", 8, 6, 4))
    else:
        full = models.sd15_unet()
        cases.append(overhead_case("sd15 full-size (860M, random)", full, "sd15", 32, 10, 4))
        del full
        cases.append(overhead_case("sdxl tiny fixture", models.fixture_model("sdxl"), "sdxl", 16, 10, 4))
    return {"target": "psa_t1 / stock <= 1.02", "cases": cases,
            "met": all(c["variants"]["psa_t1"]["ratio"] <= 1.02 for c in cases)}


SCALING_CELL_CAP_S = 50.0  # one grid cell's predicted seconds at most (full run)
SCALING_BUDGET_S = 180.0  # the whole grid's predicted seconds at most (full run)


def _cell_plan(per_call_s: float, cap_s: float, left_s: float) -> tuple[int, bool] | None:
    """(steps, with the reference-style peer) for one grid cell, or None when nothing fits.

    In order: 6 steps with stock, PSA and the peer; 4 steps with all three; 4 steps without the
    peer (stock and PSA only, the ratio the target is about). None when even that would exceed
    the cell cap or what is left of the grid's budget."""
    for steps, variants in ((6, 3), (4, 3), (4, 2)):
        if steps * variants * per_call_s <= min(cap_s, left_s):
            return steps, variants == 3
    return None


def bench_scaling(quick: bool) -> dict:
    """Benchmark 2: PSA / stock (and reference-style / stock) per step across batch and latent sizes.

    Cells run from the least work to the most. The seconds per model call of each cell are
    predicted before it runs — the batch-1 cell of a latent size from a 2-step stock probe, every
    other cell as ``batch ×`` the measured batch-1 call — and gets what fits its cap
    (:func:`_cell_plan`: 6 steps, 4 steps, 4 steps without the reference-style peer) or is
    skipped and listed with its predicted cost. docs/benchmarks.md, "2. Scaling".
    """
    base = models.sd15_unet(**SCALING_UNET)
    single = models.adapter_for(base, "sd15", 1)
    batches, sizes = ([1, 4], [16, 32]) if quick else ([1, 2, 4, 8], [16, 32, 64])
    cap, left = (30.0, 90.0) if quick else (SCALING_CELL_CAP_S, SCALING_BUDGET_S)
    grid, skipped = [], []
    for size in sizes:
        started = time.perf_counter()
        probe = interleaved_sample(base, {"stock": base}, "sd15", 1, size, 2)["stock"]
        left -= time.perf_counter() - started
        per_row = statistics.median(probe)
        for batch in batches:
            plan = _cell_plan(per_row * batch, cap, left)
            if plan is None:
                skipped.append({"batch": batch, "latent": size,
                                "predicted_s_for_4_steps": round(4 * 2 * per_row * batch, 1)})
                continue
            steps, with_peer = plan
            emb = models.profiles(1)
            variants = {"stock": base, "psa_t1": models.psa_model(base, single, emb)}
            if with_peer:
                variants["reference_style_t1"] = models.reference_style_model(base, single, emb)
            started = time.perf_counter()
            summary = ratio_summary(interleaved_sample(base, variants, "sd15", batch, size, steps), "stock")
            spent = time.perf_counter() - started
            left -= spent
            if batch == 1:
                per_row = summary["stock"]["median_s"]
            grid.append({"batch": batch, "latent": size, "steps": steps, "seconds": round(spent, 1), **summary})
    ratios = [g["psa_t1"]["ratio"] for g in grid]
    return {"model": f"SD1.5 layout, model_channels {SCALING_UNET['channels']}, mult {SCALING_UNET['mult']}",
            "cfg": 7.0, "cell_cap_s": cap, "grid": grid, "skipped": skipped,
            "psa_t1_ratio_range": [min(ratios), max(ratios)] if ratios else None}


def batching_gain(base, adapter, size: int, steps: int = 5) -> dict:
    """Where many-users' ratio comes from: per model call, 1 batch of 4 vs 4 × batch 1, stock and PSA.

    One interleaved KSampler run (stock and PSA evaluated on every call, paired) at batch 1 and
    one at batch 4; ``call_ratio`` = t(batch 4) / (4 · t(batch 1)) is what batching saves inside
    the UNet alone. If PSA's equals stock's, PSA adds no per-row cost that fails to batch.
    """
    out = {"latent": size, "steps": steps}
    for batch in (1, 4):
        emb = models.profiles(batch)
        variants = {"stock": base, "psa_t1": models.psa_model(base, adapter, emb)}
        times = interleaved_sample(base, variants, "sd15", batch, size, steps)
        out[f"batch{batch}_s"] = {k: round(statistics.median(v), 4) for k, v in times.items()}
    out["call_ratio"] = {k: round(out["batch4_s"][k] / (4 * out["batch1_s"][k]), 3) for k in ("stock", "psa_t1")}
    return out


def bench_many_users(quick: bool) -> dict:
    """Benchmark 3: 4 profiles in one batch of 4 vs 4 sequential batch-1 runs, one profile each.

    Also measures the cause of the figure (:func:`batching_gain` at several latent sizes) and the
    fixed per-run share it implies: with a run costing ``F + b·R`` for ``b`` rows, the ratio is
    ``(F + 4R) / (4F + 4R)``, so ≤ 0.75 needs ``F`` ≥ 1/3 of a batch-1 run.
    """
    import comfy.sample  # noqa: PLC0415 - ComfyUI is importable only after import_comfy()

    base = models.sd15_unet(**SCALING_UNET)
    adapter = models.adapter_for(base, "sd15", 1)

    psa_base = attach_adapter(base, adapter)
    emb = models.profiles(4)
    size, steps, repeats = (16, 4, 5) if quick else (32, 10, 5)
    pos, neg = models.conditioning("sd15")

    def run(embeddings: torch.Tensor, batch: int) -> None:
        latent = torch.zeros(batch, 4, size, size)
        noise = torch.randn(latent.shape, generator=torch.Generator().manual_seed(1))
        model = attach_profile(psa_base, embeddings, 1.0)
        comfy.sample.sample(model, noise, steps, 7.0, "euler", "normal", pos, neg, latent, disable_pbar=True, seed=1)

    def sequential() -> None:
        for i in range(4):
            run(emb[i:i + 1], 1)

    times = paired_runs({"sequential_4x1": sequential, "batched_1x4": lambda: run(emb, 4)}, repeats)
    summary = ratio_summary(times, "sequential_4x1")
    ratio = summary["batched_1x4"]["ratio"]
    fixed_share = (4 - 4 * ratio) / 3  # F / (F + R) from ratio = (F + 4R) / (4F + 4R)
    gains = [batching_gain(base, adapter, s, 4 if quick else 5) for s in ((8, 16) if quick else (8, 16, 32))]
    return {"model": f"SD1.5 layout, model_channels {SCALING_UNET['channels']}", "latent": size, "steps": steps,
            "cfg": 7.0, "profiles": 4, "timings": summary, "ratio": ratio,
            "fixed_share_of_batch1_run": round(fixed_share, 3), "batching_gain_per_call": gains,
            "target": "batched / sequential <= 0.75", "met": ratio <= 0.75}
