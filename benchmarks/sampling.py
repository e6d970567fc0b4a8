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

from psa_model.adapter.patch import attach_profile, installed_adapter

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
    import comfy.sample

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
    from psa_model.adapter.patch import attach_adapter

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


def bench_scaling(quick: bool) -> dict:
    """Benchmark 2: PSA / stock (and reference-style / stock) per step across batch and latent sizes."""
    base = models.sd15_unet(**SCALING_UNET)
    single = models.adapter_for(base, "sd15", 1)
    batches, sizes, steps = ([1, 4], [16, 32], 6) if quick else ([1, 2, 4, 8], [16, 32, 64], 6)
    grid = []
    for size in sizes:
        for batch in batches:
            emb = models.profiles(1)
            variants = {"stock": base, "psa_t1": models.psa_model(base, single, emb),
                        "reference_style_t1": models.reference_style_model(base, single, emb)}
            summary = ratio_summary(interleaved_sample(base, variants, "sd15", batch, size, steps), "stock")
            grid.append({"batch": batch, "latent": size, **{k: v for k, v in summary.items()}})
    ratios = [g["psa_t1"]["ratio"] for g in grid]
    return {"model": f"SD1.5 layout, model_channels {SCALING_UNET['channels']}, mult {SCALING_UNET['mult']}",
            "steps": steps, "cfg": 7.0, "grid": grid, "psa_t1_ratio_range": [min(ratios), max(ratios)]}


def bench_many_users(quick: bool) -> dict:
    """Benchmark 3: 4 profiles in one batch of 4 vs 4 sequential batch-1 runs, one profile each."""
    import comfy.sample

    base = models.sd15_unet(**SCALING_UNET)
    adapter = models.adapter_for(base, "sd15", 1)
    from psa_model.adapter.patch import attach_adapter

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
    return {"model": f"SD1.5 layout, model_channels {SCALING_UNET['channels']}", "latent": size, "steps": steps,
            "cfg": 7.0, "profiles": 4, "timings": summary, "ratio": summary["batched_1x4"]["ratio"],
            "target": "batched / sequential <= 0.75", "met": summary["batched_1x4"]["ratio"] <= 0.75}
