"""``python -m benchmarks [--only NAME ...] [--quick] [--out DIR]``: run the benchmarks, print one
JSON report, write it to ``DIR/report.json`` (after every benchmark, so a partial run keeps what
finished) and render the plots (``DIR/*.png``). See ``docs/benchmarks.md`` for what each measures.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path

from psa_model.scratch import ScratchError, claim
from training.allocator import keep_freed_memory
from training.comfy_host import import_comfy

from .plots import render
from .server import bench_profile_switch

REPO_ROOT = Path(__file__).resolve().parent.parent

# Cheapest first, so a run cut short still holds most figures.
NAMES = ("adapter_load", "encoder", "many_users", "overhead", "profile_switch", "scaling", "training", "gpu")


def _machine() -> dict:
    import torch  # noqa: PLC0415 - heavy (torch): keeps this module light to import

    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next((line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")), "")
        with open("/proc/loadavg") as fh:
            load = fh.read().split()[:3]
    except OSError:
        cpu, load = platform.processor(), []
    return {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "python": platform.python_version(), "platform": platform.platform(), "load_average_at_start": load,
            "cuda": torch.cuda.is_available()}


def run_one(name: str, quick: bool, work: Path) -> dict:
    if name == "adapter_load":
        from .adapter_load import bench_adapter_load  # noqa: PLC0415 - heavy (torch): keeps this module light to import
        return bench_adapter_load(quick, work / "adapter_load")
    if name == "encoder":
        from .encoder import bench_encoder  # noqa: PLC0415 - heavy (torch): keeps this module light to import
        return bench_encoder(quick, work / "encoder")
    if name == "many_users":
        from .sampling import bench_many_users  # noqa: PLC0415 - heavy (torch): keeps this module light to import
        return bench_many_users(quick)
    if name == "overhead":
        from .sampling import bench_overhead  # noqa: PLC0415 - heavy (torch): keeps this module light to import
        return bench_overhead(quick)
    if name == "profile_switch":
        return bench_profile_switch(quick, work / "profile_switch")
    if name == "scaling":
        from .sampling import bench_scaling  # noqa: PLC0415 - heavy (torch): keeps this module light to import
        return bench_scaling(quick)
    if name == "training":
        from .training import bench_latent_cache, bench_memory_and_time  # noqa: PLC0415 - heavy (torch): keeps this module light to import
        cache = (dict(unet="tiny", captions=2, warmup_steps=1, resolution=128) if quick
                 else dict(unet="full", captions=2, warmup_steps=1))
        return {"step": bench_memory_and_time(steps=2 if quick else 5, repeats=1, malloc="trainer"),
                "latent_cache": [bench_latent_cache(work / "training", **cache)]}
    if name == "gpu":
        import torch  # noqa: PLC0415 - heavy (torch): keeps this module light to import
        if not torch.cuda.is_available():
            return {"status": "not run: no CUDA device on this machine; run the same command on a GPU machine "
                              "(fp16 and bf16 columns are left empty in docs/benchmarks.md)"}
        return {"status": "CUDA present but the GPU column is not automated yet; run the command there by hand"}
    raise ValueError(f"unknown benchmark {name!r}; choose from {', '.join(NAMES)}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", choices=NAMES, metavar="NAME", help=f"subset of: {', '.join(NAMES)}")
    parser.add_argument("--quick", action="store_true", help="small sizes and few repeats (a smoke pass)")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "output" / "benchmarks")
    parser.add_argument("--work", type=Path, default=REPO_ROOT / ".cache" / "benchmarks",
                        help="scratch folder (adapter files, tiny LLM, server, training data); it must be new, "
                             "empty, or one the benchmarks made (it holds a .psa-scratch marker): the benchmarks "
                             "delete files in it")
    parser.add_argument("--no-plots", action="store_true")
    parser.add_argument("--threads", type=int, metavar="N",
                        help="torch threads here and in the server / worker processes (default: torch's, one per "
                             "core). On a machine another job keeps busy, use fewer than the cores: a parallel "
                             "step waits for its slowest thread (docs/benchmarks.md, Method)")
    args = parser.parse_args(argv)

    try:
        claim(args.work, "the benchmarks' scratch folder (--work)")
    except ScratchError as exc:
        parser.error(str(exc))
    if args.threads:
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):  # inherited by the server and training workers
            os.environ[var] = str(args.threads)
        import torch  # noqa: PLC0415 - heavy (torch): keeps this module light to import

        torch.set_num_threads(args.threads)

    keep_freed_memory()  # as the trainer and a long-running server would; see training/allocator.py
    import_comfy(force_cpu=True)
    args.out.mkdir(parents=True, exist_ok=True)
    report = {"command": "python -m benchmarks " + " ".join(argv if argv is not None else sys.argv[1:]),
              "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "quick": args.quick,
              "machine": _machine(), "seconds": {}, "results": {}}
    started = time.perf_counter()
    for name in args.only or NAMES:
        t0 = time.perf_counter()
        print(f"[benchmarks] {name} ...", file=sys.stderr, flush=True)
        try:
            report["results"][name] = run_one(name, args.quick, args.work)
        except Exception as exc:  # noqa: BLE001 - one failing benchmark must not lose the others
            report["results"][name] = {"error": f"{type(exc).__name__}: {exc}"[:2000]}
            traceback.print_exc()
        report["seconds"][name] = round(time.perf_counter() - t0, 1)
        report["seconds"]["total"] = round(time.perf_counter() - started, 1)
        (args.out / "report.json").write_text(json.dumps(report, indent=1))
    if not args.no_plots:
        report["plots"] = [str(p) for p in render(report, args.out)]
        (args.out / "report.json").write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))
    return 1 if any("error" in r for r in report["results"].values()) else 0


if __name__ == "__main__":
    raise SystemExit(main())
