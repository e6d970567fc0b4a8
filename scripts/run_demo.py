"""The main job: run the multi-profile comparison workflow headless in a real ComfyUI.

By default everything is local and deterministic: the tiny SD1.5 fixture, a demo adapter and
three demo profiles (random weights — a smoke model, so the images are noise). Point it at real
files to get real images:

    python -m scripts.run_demo --models-dir ~/ComfyUI/models --checkpoint v1-5-pruned-emaonly.safetensors \
        --adapter psa_sd15.safetensors --profiles a.json b.json c.json --size 512 --steps 25
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from scripts.comfy_server import ComfyServer  # noqa: E402
from scripts.workflows import API_DIR, substitute  # noqa: E402

WORKFLOW = "psa_multi_profile_comparison"


def main(argv: list[str] | None = None) -> int:
    env = os.environ.get
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models-dir", type=Path, default=env("PSA_MODELS_DIR"),
                        help="a ComfyUI models folder (checkpoints/, psa_adapters/, psa_profiles/); default: demo models")
    parser.add_argument("--checkpoint", default=env("PSA_CHECKPOINT"), help="checkpoint file name in models/checkpoints")
    parser.add_argument("--adapter", default=env("PSA_ADAPTER"), help="adapter file name in models/psa_adapters")
    parser.add_argument("--profiles", nargs=3, default=env("PSA_PROFILES", "").split() or None,
                        help="three profile file names in models/psa_profiles")
    parser.add_argument("--size", type=int, default=int(env("PSA_SIZE", "0")) or None, help="image size (px)")
    parser.add_argument("--steps", type=int, default=int(env("PSA_STEPS", "0")) or None, help="sampling steps")
    parser.add_argument("--output", type=Path, default=Path(env("PSA_OUTPUT", REPO_ROOT / "output" / "demo")),
                        help="where the PNGs are written")
    args = parser.parse_args(argv)

    from training.comfy_host import comfyui_path

    if args.models_dir is None:
        from scripts.build_fixtures import ensure_fixtures
        from scripts.demo_models import DEMO_PROFILES, prepare_models_dir

        print("[demo] using the embedded default: tiny SD1.5 smoke model, demo adapter, demo profiles (random weights)")
        fixtures = ensure_fixtures(REPO_ROOT / ".cache" / "fixtures")
        args.models_dir = prepare_models_dir(REPO_ROOT / ".cache" / "demo-models", fixtures)
        args.checkpoint = args.checkpoint or "sd15_tiny.safetensors"
        args.adapter = args.adapter or "psa_demo_sd15.safetensors"
        args.profiles = args.profiles or [f"{name}.json" for name in DEMO_PROFILES]
        args.size, args.steps = args.size or 64, args.steps or 8
    prompt = substitute(json.loads((API_DIR / f"{WORKFLOW}.json").read_text()), args.checkpoint, args.adapter,
                        args.profiles, args.size, args.steps)
    args.output.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with ComfyServer(comfyui_path(), python=sys.executable, models_dir=args.models_dir) as server:
        entry = server.run(prompt, timeout=1800)
        images = server.images(entry)
    for i, png in enumerate(images):
        path = args.output / f"{WORKFLOW}_{i:02d}.png"
        path.write_bytes(png)
        print(f"[demo] wrote {path}")
    print(f"[demo] profiles {args.profiles} -> {len(images)} image(s) in {time.monotonic() - started:.1f} s")
    return 0 if images else 1


if __name__ == "__main__":
    raise SystemExit(main())
