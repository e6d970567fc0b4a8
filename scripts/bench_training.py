"""Training performance, measured side by side (issue 4, "Performance"; CPU).

1. ``memory``/``time``: one Diffusion-DPO step on a full-size SD1.5-shaped UNet (random weights,
   860 M parameters, small latents), two layouts, each in a fresh subprocess:
   - ``shared``: this project's layout — the reference prediction is the same UNet with the PSA
     branch off (scale 0);
   - ``copy``: a separate frozen reference UNet (a second copy in memory).
   Reports each one's peak resident memory during the steps above the process's runtime
   baseline (Python, torch and ComfyUI loaded, no model yet), the raw peak RSS, the median step
   time, and the ratios.
2. ``latent cache``: epochs over a small synthetic Sage set on the tiny SD1.5 fixture at 256 px,
   without the cache and with it (the second cached epoch reads latents instead of VAE-encoding).

    python -m scripts.bench_training [--steps 4] [--repeats 2] [--only memory|cache]
"""
from __future__ import annotations

import argparse
import ctypes
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

# glibc returns large freed blocks to the OS and adapts its mmap threshold as it goes; the
# process holding one UNet then page-faults its activations in again on every step (measured:
# 3.3 s vs 1.9 s per step), which times the allocator, not the layout. Fixed thresholds give
# both layouts the same allocator behaviour.
FIXED_MALLOC = {"MALLOC_MMAP_THRESHOLD_": str(2**32), "MALLOC_TRIM_THRESHOLD_": str(2**36)}

SD15_FULL = dict(image_size=32, in_channels=4, out_channels=4, model_channels=320, channel_mult=[1, 2, 4, 4],
                 num_res_blocks=[2, 2, 2, 2], transformer_depth=[1, 1, 1, 1, 1, 1, 0, 0],
                 transformer_depth_middle=1, transformer_depth_output=[0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1][::-1],
                 context_dim=768, num_heads=8, use_linear_in_transformer=False, use_spatial_transformer=True,
                 legacy=False)


def _full_size_model():
    import comfy.ops
    import comfy.sd
    from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel

    from scripts.build_fixtures import fill_parameters

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


def step_worker(layout: str, steps: int) -> dict:
    """One process, one layout: peak RSS during the training steps (MiB) and step times.

    Model construction briefly holds extra copies of the weights; glibc's ``malloc_trim`` returns
    that memory before measuring, so the peak is the training step's (weights + activations +
    adapter and optimizer state)."""
    from training.comfy_host import import_comfy

    import_comfy(force_cpu=True)
    import comfy.sd  # noqa: F401 - imported before the baseline is read
    runtime_mib = PeakRSS.current()  # Python + torch + ComfyUI, before any model exists
    from psa_model.adapter import adapter_config_for_model
    from psa_model.layer_map import architecture, match_sites
    from psa_model.patch import UserConditioning
    from training.loss import dpo_loss_from_predictions
    from training.model import patch_model, predict_eps

    base = _full_size_model()
    reference = _full_size_model() if layout == "copy" else None
    sites = match_sites(architecture("sd15"), base.get_model_object("diffusion_model"))
    from psa_model.adapter import PSAAdapter

    adapter = PSAAdapter(adapter_config_for_model("sd15", sites, embed_dim=3584))
    patched = patch_model(base, adapter)  # the trainer's own set-up: UNet frozen, adapter trainable
    if reference is not None:
        reference.model.diffusion_model.requires_grad_(False)
    optimizer = torch.optim.AdamW(adapter.parameters(), lr=1e-5)
    gen = torch.Generator().manual_seed(0)
    times = []
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    loaded_mib = PeakRSS.current()
    meter = PeakRSS().__enter__()
    for _ in range(steps + 1):  # the first step warms up allocators and is not timed
        x = torch.randn(2, 4, 16, 16, generator=gen)
        sigma = torch.full((2,), 2.0)
        noise = torch.randn(2, 4, 16, 16, generator=gen)
        conds = {"c_crossattn": torch.randn(2, 77, 768, generator=gen)}
        emb = torch.randn(2, 3584, generator=gen)
        started = time.perf_counter()
        eps = predict_eps(patched, x, sigma, conds, UserConditioning.from_adapter(adapter, emb))
        with torch.no_grad():
            if reference is None:
                ref = predict_eps(patched, x, sigma, conds, UserConditioning.off())
            else:
                denoised = reference.model.apply_model(x, sigma, transformer_options={"cond_or_uncond": [0]}, **conds)
                ref = (x - denoised) / sigma.reshape(-1, 1, 1, 1)
        loss = dpo_loss_from_predictions(eps, ref, noise, 5000.0).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - started)
    meter.__exit__()
    return {"layout": layout, "runtime_rss_mib": round(runtime_mib), "loaded_rss_mib": round(loaded_mib),
            "peak_rss_mib": round(meter.peak), "step_peak_mib": round(meter.peak - runtime_mib),
            "step_s": [round(t, 3) for t in times[1:]]}


def bench_memory_and_time(steps: int, repeats: int = 2) -> dict:
    """Alternate the layouts (copy, shared, copy, shared, ...) so machine drift hits both alike."""
    results: dict[str, dict] = {}
    for _ in range(repeats):
        for layout in ("copy", "shared"):
            out = subprocess.run([sys.executable, "-m", "scripts.bench_training", "--worker", layout, "--steps",
                                  str(steps)], cwd=REPO_ROOT, capture_output=True, text=True, timeout=3600, check=True,
                                 env={**os.environ, **FIXED_MALLOC})
            run = json.loads(out.stdout.strip().splitlines()[-1])
            if layout in results:
                run["step_s"] = results[layout]["step_s"] + run["step_s"]
                for key in ("peak_rss_mib", "step_peak_mib"):
                    run[key] = max(run[key], results[layout][key])
            results[layout] = run
    shared, copy = results["shared"], results["copy"]
    return {"shared": shared, "copy": copy,
            "peak_memory_ratio": round(shared["step_peak_mib"] / copy["step_peak_mib"], 3),
            "peak_rss_ratio_incl_runtime": round(shared["peak_rss_mib"] / copy["peak_rss_mib"], 3),
            "step_time_ratio": round(statistics.median(shared["step_s"]) / statistics.median(copy["step_s"]), 3)}


def bench_latent_cache(work: Path) -> dict:
    from training.comfy_host import import_comfy

    import_comfy()
    from scripts.build_fixtures import ensure_fixtures
    from training.config import TrainConfig
    from training.model import load_base
    from training.synthetic import generate
    from training.trainer import Trainer

    fixture = ensure_fixtures(REPO_ROOT / ".cache" / "fixtures")["sd15_tiny.safetensors"]
    data = generate(work / "data", users=4, val_users=1, captions=6, val_captions=1, categories=1, image_size=256)
    base = load_base(fixture)
    pairs = 4 * 6

    def epoch_seconds(cache: str | None, tag: str) -> float:
        cfg = TrainConfig(checkpoint=str(fixture), train_data=str(data["train"]), embeddings=str(data["embeddings"]),
                          output_dir=str(work / tag), resolution=256, batch_size=4, max_steps=pairs // 4,
                          lr=1e-5, warmup_steps=0, checkpoint_every=0, validate_every=0, progress=False,
                          latent_cache=cache or "", random_flip=False)
        trainer = Trainer(cfg, base=base)
        started = time.perf_counter()
        trainer.train()
        return time.perf_counter() - started

    epoch_seconds(None, "warmup")  # text-encoder cache and allocator warm-up, not measured
    uncached = epoch_seconds(None, "nocache")
    first = epoch_seconds(str(work / "latents"), "cache1")
    second = epoch_seconds(str(work / "latents"), "cache2")
    return {"epoch_without_cache_s": round(uncached, 2), "first_cached_epoch_s": round(first, 2),
            "second_cached_epoch_s": round(second, 2), "speedup": round(uncached / second, 2)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=2, help="alternating runs of each layout")
    parser.add_argument("--only", choices=["memory", "cache"])
    parser.add_argument("--worker", choices=["shared", "copy"], help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, default=REPO_ROOT / ".cache" / "bench_training")
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(step_worker(args.worker, args.steps)))
        return 0
    report = {}
    if args.only in (None, "memory"):
        report["step"] = bench_memory_and_time(args.steps, args.repeats)
    if args.only in (None, "cache"):
        report["latent_cache"] = bench_latent_cache(args.work)
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
