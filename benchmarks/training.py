"""Training performance, measured side by side on CPU (README: Training, "Performance").

1. ``memory``/``time``: Diffusion-DPO steps on a full-size SD1.5-shaped UNet (random weights,
   860 M parameters, small latents) in two layouts:
   - ``shared``: this project's layout — the reference prediction is the same UNet with the PSA
     branch off (scale 0);
   - ``copy``: a separate frozen reference UNet (a second copy in memory).
   Peak resident memory during the steps, above the process's runtime baseline (Python, torch
   and ComfyUI loaded, no model yet), is measured for each layout alone in a fresh subprocess;
   step times side by side in one process that alternates the two kinds of step.
2. ``latent cache``: trainer epochs over a small synthetic Sage set without the cache and with
   it (the second cached epoch reads latents instead of VAE-encoding): the full-size UNet at
   128 px and the tiny SD1.5 fixture's UNet at 256 px, both with a real-shape SD VAE.
3. ``text cache``: the caption-conditioning cache's memory after encoding N distinct captions
   with a byte budget (SD1.5 fixture's CLIP, 768-wide like CLIP-L), against what an unbounded
   cache would hold.

    python -m benchmarks.training [--steps 4] [--repeats 2] [--only memory|cache|text-cache]
                                     [--malloc trainer|default] [--cache-unet full|tiny|both]
"""
from __future__ import annotations

import argparse
import ctypes
import json
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import torch

from devkit.cli import positive_int
from devkit.fixtures import ensure_fixtures, fill_parameters
from devkit.unet_configs import SD15_FULL
from psa_model.adapter.layer_map import architecture, match_sites
from psa_model.adapter.modules import REFERENCE_EMBED_DIM, PSAAdapter, adapter_config_for_model
from psa_model.adapter.patch import UserConditioning
from psa_model.scratch import ScratchError, claim, remove
from training.allocator import keep_freed_memory
from training.comfy_host import import_comfy
from training.config import TrainConfig
from training.loss import dpo_loss_from_predictions
from training.model import BaseModel, load_base, patch_model, predict_eps
from training.synthetic import generate
from training.text import TextEncoder
from training.trainer import Trainer

REPO_ROOT = Path(__file__).resolve().parent.parent


def _full_size_model():
    import comfy.ops  # noqa: PLC0415 - ComfyUI is importable only after import_comfy()
    import comfy.sd  # noqa: PLC0415 - ComfyUI is importable only after import_comfy()
    from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel  # noqa: PLC0415 - ComfyUI is importable only after import_comfy()

    unet = UNetModel(**SD15_FULL, operations=comfy.ops.disable_weight_init)
    fill_parameters(unet, seed=0)
    sd = unet.state_dict()
    del unet
    return comfy.sd.load_diffusion_model_state_dict(sd, model_options={"dtype": torch.float32})


class PeakRSS:
    """Samples this process's resident memory every 2 ms; ``peak`` in MiB since ``start``."""

    def __init__(self) -> None:
        self.peak = 0.0
        self._stop = threading.Event()

    @staticmethod
    def current() -> float:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * 4096 / 2**20

    def __enter__(self) -> "PeakRSS":
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.current())
            time.sleep(0.002)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def step_worker(layout: str, steps: int, malloc: str) -> dict:
    """One process: peak RSS during the training steps (MiB) and step times.

    ``layout`` "shared" or "copy" measures that layout's memory alone. "both" holds the copy
    and alternates shared and copy steps, so the two step times are measured side by side in
    one process (process-to-process placement differs by a few percent on this machine).
    Model construction briefly holds extra copies of the weights; glibc's ``malloc_trim`` returns
    that memory before measuring, so the peak is the training step's (weights + activations +
    adapter and optimizer state). ``malloc="trainer"`` applies the trainer's allocator setting
    (:func:`training.allocator.keep_freed_memory`, as ``python -m training.train_psa`` does)."""
    if malloc == "trainer" and not keep_freed_memory():
        raise RuntimeError("could not apply the trainer's malloc setting (not glibc, or MALLOC_* set)")

    import_comfy(force_cpu=True)
    import comfy.sd  # noqa: F401, PLC0415 - imported (after import_comfy) before the baseline is read
    runtime_mib = PeakRSS.current()  # Python + torch + ComfyUI, before any model exists

    base = _full_size_model()
    reference = _full_size_model() if layout in ("copy", "both") else None
    sites = match_sites(architecture("sd15"), base.get_model_object("diffusion_model"))
    adapter = PSAAdapter(adapter_config_for_model("sd15", sites, embed_dim=REFERENCE_EMBED_DIM))
    patched = patch_model(base, adapter)  # the trainer's own set-up: UNet frozen, adapter trainable
    if reference is not None:
        reference.model.diffusion_model.requires_grad_(False)
    optimizer = torch.optim.AdamW(adapter.parameters(), lr=1e-5)
    gen = torch.Generator().manual_seed(0)

    def step(kind: str) -> float:
        x = torch.randn(2, 4, 16, 16, generator=gen)
        sigma = torch.full((2,), 2.0)
        noise = torch.randn(2, 4, 16, 16, generator=gen)
        conds = {"c_crossattn": torch.randn(2, 77, 768, generator=gen)}
        emb = torch.randn(2, REFERENCE_EMBED_DIM, generator=gen)
        started = time.perf_counter()
        with torch.no_grad():  # reference first, as the trainer does (Trainer.predictions)
            if kind == "shared":
                ref = predict_eps(patched, x, sigma, conds, UserConditioning.off())
            else:
                denoised = reference.model.apply_model(x, sigma, transformer_options={"cond_or_uncond": [0]}, **conds)
                ref = (x - denoised) / sigma.reshape(-1, 1, 1, 1)
        eps = predict_eps(patched, x, sigma, conds, UserConditioning.from_adapter(adapter, emb))
        loss = dpo_loss_from_predictions(eps, ref, noise, 5000.0).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return time.perf_counter() - started

    kinds = ["shared", "copy"] if layout == "both" else [layout]
    times: dict[str, list[float]] = {k: [] for k in kinds}
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    loaded_mib = PeakRSS.current()
    meter = PeakRSS().__enter__()
    for k in kinds:
        step(k)  # warms up allocators and creates the optimizer state; not timed
    for _ in range(steps):
        for k in kinds:
            times[k].append(step(k))
    meter.__exit__()
    return {"layout": layout, "runtime_rss_mib": round(runtime_mib), "loaded_rss_mib": round(loaded_mib),
            "peak_rss_mib": round(meter.peak), "step_peak_mib": round(meter.peak - runtime_mib),
            "step_s": {k: [round(t, 3) for t in v] for k, v in times.items()}}


def _worker(layout: str, steps: int, malloc: str) -> dict:
    out = subprocess.run([sys.executable, "-m", "benchmarks.training", "--worker", layout, "--steps", str(steps),
                          "--malloc", malloc], cwd=REPO_ROOT, capture_output=True, text=True, timeout=3600,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def bench_memory_and_time(steps: int, repeats: int = 2, malloc: str = "trainer") -> dict:
    """Peak memory: each layout alone in a fresh process, alternating (copy, shared, copy, ...)
    so machine drift hits both alike; the largest peak of each counts. Step time: one process
    holding both, alternating shared and copy steps; the time ratio is the median of the
    ``repeats × steps`` paired ratios (drift cancels within a pair), with its quartiles.

    ``malloc``: "trainer" (the trainer's allocator setting) or "default" (glibc's)."""
    peaks: dict[str, dict] = {}
    for _ in range(repeats):
        for layout in ("copy", "shared"):
            run = _worker(layout, max(2, steps // 2), malloc)
            if layout not in peaks or run["step_peak_mib"] > peaks[layout]["step_peak_mib"]:
                peaks[layout] = run
    times: dict[str, list[float]] = {"shared": [], "copy": []}
    for _ in range(repeats):
        run = _worker("both", steps, malloc)
        for k in times:
            times[k] += run["step_s"][k]
    shared, copy = peaks["shared"], peaks["copy"]
    paired = [a / b for a, b in zip(times["shared"], times["copy"])]  # each shared step over the copy step after it
    return {"peak_mib": {k: {key: v[key] for key in ("runtime_rss_mib", "loaded_rss_mib", "peak_rss_mib",
                                                      "step_peak_mib")} for k, v in peaks.items()},
            "step_s": times,
            "median_step_s": {k: round(statistics.median(v), 3) for k, v in times.items()},
            "peak_memory_ratio": round(shared["step_peak_mib"] / copy["step_peak_mib"], 3),
            "peak_rss_ratio_incl_runtime": round(shared["peak_rss_mib"] / copy["peak_rss_mib"], 3),
            "step_time_ratio": round(statistics.median(paired), 3),
            "step_time_ratio_quartiles": [round(q, 3) for q in statistics.quantiles(paired, n=4)[::2]]}


def bench_latent_cache(work: Path, unet: str, captions: int = 6, warmup_steps: int | None = None,
                       resolution: int | None = None) -> dict:
    """Epoch times without and with the latent cache, through the trainer (DPO, batch 2, fp32).

    ``unet="full"``: the full-size SD1.5-shaped UNet at 128 px (16×16 latents, as above);
    ``unet="tiny"``: the tiny SD1.5 fixture's UNet at 256 px (``resolution`` overrides either).
    Both use the fixture's VAE, which has the real SD VAE shape (ch 128, ch_mult 1-2-4-4), so
    encoding costs what it costs in SD1.5. An epoch is ``2 × captions`` pairs (two users), in
    steps of 2 pairs; the untimed warm-up runs ``warmup_steps`` steps (default: one epoch).
    The speed-up cannot exceed (encode + step) / step: the cache removes the encode only.
    """
    keep_freed_memory()
    import_comfy(force_cpu=True)

    fixture = ensure_fixtures(REPO_ROOT / ".cache" / "fixtures")["sd15_tiny.safetensors"]
    base = load_base(fixture)
    if unet == "full":
        base = BaseModel(model=_full_size_model(), clip=base.clip, vae=base.vae, arch="sd15")
    resolution = resolution or (128 if unet == "full" else 256)

    work = claim(work / f"{unet}_{resolution}_{captions}", "the latent-cache benchmark's scratch folder")
    data = generate(work / "data", users=2, val_users=1, captions=captions, val_captions=1, categories=1,
                    image_size=resolution)
    pairs, batch = 2 * captions, 2

    def epoch_seconds(cache: str | None, tag: str, steps: int | None = None) -> float:
        cfg = TrainConfig(checkpoint=str(fixture), train_data=str(data["train"]), embeddings=str(data["embeddings"]),
                          output_dir=str(work / tag), resolution=resolution, batch_size=batch,
                          max_steps=steps or pairs // batch, lr=1e-5, warmup_steps=0, checkpoint_every=0, validate_every=0,
                          progress=False, latent_cache=cache or "", random_flip=False)
        trainer = Trainer(cfg, base=base)
        started = time.perf_counter()
        trainer.train()
        return time.perf_counter() - started

    epoch_seconds(None, "warmup", warmup_steps)  # allocator and first-call warm-up, not measured
    uncached = epoch_seconds(None, "nocache")
    cache = work / "latents"
    remove(cache, work)
    first = epoch_seconds(str(cache), "cache1")
    second = epoch_seconds(str(cache), "cache2")
    return {"unet": unet, "resolution": resolution, "pairs": pairs, "steps_per_epoch": pairs // batch, "epoch_without_cache_s": round(uncached, 2),
            "first_cached_epoch_s": round(first, 2), "second_cached_epoch_s": round(second, 2),
            "encode_share_of_uncached_epoch": round((uncached - second) / uncached, 3),
            "speedup": round(uncached / second, 2)}


def bench_text_cache(captions: int, budget_mib: int) -> dict:
    """Encode ``captions`` distinct captions through the trainer's TextEncoder with a byte budget."""
    import_comfy(force_cpu=True)

    base = load_base(ensure_fixtures(REPO_ROOT / ".cache" / "fixtures")["sd15_tiny.safetensors"])
    encoder = TextEncoder(base, 512, "truncate", cache_bytes=budget_mib * 2**20)
    for i in range(captions):
        encoder.encode(f"a photograph of subject number {i}, (detailed) [caption]")
    stats = encoder.cache.stats()
    per_caption = encoder.cache.size_of(encoder.encode("a photograph of subject number 0"))
    return {"captions": captions, "budget_mib": budget_mib, "bytes_per_caption": per_caption,
            "cached_entries": stats["entries"], "cache_bytes": stats["bytes"], "peak_bytes": stats["peak_bytes"],
            "unbounded_bytes": captions * per_caption}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.training", description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=positive_int, default=4, metavar="N", help="timed steps per run (default: 4)")
    parser.add_argument("--repeats", type=positive_int, default=2, metavar="N",
                        help="alternating runs of each layout (default: 2)")
    parser.add_argument("--only", choices=["memory", "cache", "text-cache"])
    parser.add_argument("--captions", type=positive_int, default=400, metavar="N",
                        help="distinct captions for the text-cache figure (default: 400)")
    parser.add_argument("--text-cache-mib", type=positive_int, default=32, metavar="MIB",
                        help="text-cache budget for that figure (default: 32)")
    parser.add_argument("--cache-unet", choices=["full", "tiny", "both"], default="both",
                        help="UNet for the latent-cache epochs")
    parser.add_argument("--malloc", choices=["trainer", "default"], default="trainer",
                        help="allocator for both layouts: the trainer's setting (training.allocator) or glibc's")
    parser.add_argument("--worker", choices=["shared", "copy", "both"], help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, default=REPO_ROOT / ".cache" / "bench_training", metavar="DIR",
                        help="working folder (default: .cache/bench_training)")
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(step_worker(args.worker, args.steps, args.malloc)))
        return 0
    if args.only in (None, "cache"):
        try:
            claim(args.work, "the training benchmark's scratch folder (--work)")
        except ScratchError as exc:
            parser.error(str(exc))
    report = {}
    if args.only in (None, "memory"):
        report["step"] = bench_memory_and_time(args.steps, args.repeats, args.malloc)
    if args.only in (None, "cache"):
        unets = ["full", "tiny"] if args.cache_unet == "both" else [args.cache_unet]
        report["latent_cache"] = [bench_latent_cache(args.work, u) for u in unets]
    if args.only in (None, "text-cache"):
        report["text_cache"] = bench_text_cache(args.captions, args.text_cache_mib)
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
