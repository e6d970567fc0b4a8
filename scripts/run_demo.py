"""The main job: run the multi-profile comparison workflow headless in a real ComfyUI.

By default it runs the toy world (docs/toy-world.md): it builds (or reuses, from .cache/) a small
offline SD1.5 world and its trained PSA adapter, runs the workflow for a permissive, a moderate
and a strict profile and one whose stated categories contradict its attributes, and writes a labelled grid and a Pass-Rate table (base vs PSA). Point it at
real files to get real images: paths, or names inside --models-dir; any number of profiles (one
image each, side by side in one grid):

    python -m scripts.run_demo --checkpoint ~/models/v1-5-pruned-emaonly.safetensors \
        --adapter ~/psa/psa_adapter.bin --profiles child.json adult.json --size 512 --steps 25
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from devkit.cli import positive_int
from devkit.comfy_server import ComfyServer, ServerError
from devkit.workflows import API_DIR, substitute, with_profile_count
from training.comfy_host import comfyui_path

REPO_ROOT = Path(__file__).resolve().parent.parent

WORKFLOW = "psa_multi_profile_comparison"
MODEL_FOLDERS = {"checkpoint": "checkpoints", "adapter": "psa_adapters", "profiles": "psa_profiles"}


def build_parser() -> argparse.ArgumentParser:
    env = os.environ.get
    parser = argparse.ArgumentParser(
        prog="run_demo", description=__doc__.split("\n\n")[0],
        epilog="Without --models-dir/--checkpoint/--adapter/--profiles it runs the toy world (docs/toy-world.md); "
               "--smoke-model runs the random smoke fixture instead. Each flag also reads an "
               "environment variable (PSA_MODELS_DIR, PSA_CHECKPOINT, PSA_ADAPTER, PSA_PROFILES, PSA_SIZE, PSA_STEPS, "
               "PSA_OUTPUT). See the README: From clone to a real image.")
    parser.add_argument("--models-dir", type=Path, default=env("PSA_MODELS_DIR"), metavar="DIR",
                        help="a ComfyUI models folder (checkpoints/, psa_adapters/, psa_profiles/) in which the "
                             "names below are looked up")
    parser.add_argument("--checkpoint", default=env("PSA_CHECKPOINT"), metavar="FILE",
                        help="SD1.5/SDXL checkpoint: a path, or a file name in <models-dir>/checkpoints")
    parser.add_argument("--adapter", default=env("PSA_ADAPTER"), metavar="FILE",
                        help="PSA adapter (.safetensors or psa_adapter.bin): a path, or a file name in "
                             "<models-dir>/psa_adapters")
    parser.add_argument("--profiles", nargs="+", default=env("PSA_PROFILES", "").split() or None, metavar="FILE",
                        help="one or more profiles (.json, .npy, .safetensors): paths, or file names in "
                             "<models-dir>/psa_profiles; one image each, side by side")
    parser.add_argument("--size", type=positive_int, default=env("PSA_SIZE"), metavar="PX",
                        help="image side in pixels (default: 64 for the demo, else the workflow's 512)")
    parser.add_argument("--steps", type=positive_int, default=env("PSA_STEPS"), metavar="N",
                        help="sampling steps (default: 8 for the demo, else the workflow's 20)")
    parser.add_argument("--smoke-model", action="store_true",
                        help="run the random tiny SD1.5 fixture (noise images: proves the graph runs) instead of the "
                             "toy world")
    parser.add_argument("--output", type=Path, default=Path(env("PSA_OUTPUT", REPO_ROOT / "output" / "demo")),
                        metavar="DIR", help="where the PNGs are written (default: output/demo)")
    return parser


def locate(parser: argparse.ArgumentParser, flag: str, value: str, models_dir: Path | None,
           kind: str) -> tuple[str, Path | None]:
    """(the name ComfyUI lists the file under, the folder to register for it or None) — or a usage error."""
    path = Path(value).expanduser()
    if models_dir is not None and not path.is_absolute() and (models_dir / kind / value).is_file():
        return value, None
    if path.is_file():
        return path.name, path.resolve().parent
    if models_dir is None:
        parser.error(f"{flag} {value}: no such file; give the path to the file, or its name together with --models-dir")
    parser.error(f"{flag} {value}: neither a path to a file nor a file name in {models_dir / kind}; "
                 f"give the path to the file, or put it into {models_dir / kind}")


def resolve_models(parser: argparse.ArgumentParser, args: argparse.Namespace) -> dict[str, list[Path]]:
    """Turn --checkpoint/--adapter/--profiles into names ComfyUI lists; returns the folders to register."""
    missing = [f"--{flag}" for flag in MODEL_FOLDERS if not getattr(args, flag)]
    if missing:
        parser.error(f"{' and '.join(missing)} missing: give --checkpoint, --adapter and --profiles together "
                     "(paths, or names with --models-dir), or none of them for the demo")
    if args.models_dir is not None and not args.models_dir.is_dir():
        parser.error(f"--models-dir {args.models_dir}: no such folder; give a ComfyUI models folder")
    folders: dict[str, list[Path]] = {}
    names: dict[str, list[str]] = {}
    for flag, kind in MODEL_FOLDERS.items():
        values = args.profiles if flag == "profiles" else [getattr(args, flag)]
        sources: dict[str, Path] = {}
        for value in values:
            name, folder = locate(parser, f"--{flag}", value, args.models_dir, kind)
            source = (folder / name if folder is not None else args.models_dir / kind / name).resolve()
            if sources.setdefault(name, source) != source:
                parser.error(f"--{flag}: {sources[name]} and {source} are both named {name}; rename one of them")
            if folder is not None:
                folders.setdefault(kind, []).append(folder)
            names.setdefault(flag, []).append(name)
    args.checkpoint, args.adapter, args.profiles = names["checkpoint"][0], names["adapter"][0], names["profiles"]
    return folders


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)

    extra_folders: dict[str, list[Path]] = {}
    if args.models_dir is not None or args.checkpoint or args.adapter or args.profiles:
        extra_folders = resolve_models(parser, args)
    elif not args.smoke_model:
        from toy_world.demo import run_in_server  # noqa: PLC0415 - heavy (torch): keeps this module light to import

        print("[demo] the toy world: build or reuse it, then the comparison for its four demo profiles (docs/toy-world.md)")
        return run_in_server(args.output)
    else:
        from devkit.demo_models import DEMO_PROFILES, prepare_models_dir  # noqa: PLC0415 - heavy (torch): keeps this module light to import
        from devkit.fixtures import ensure_fixtures  # noqa: PLC0415 - heavy (torch): keeps this module light to import

        print("[demo] using the embedded default: tiny SD1.5 smoke model, demo adapter, demo profiles (random weights)")
        fixtures = ensure_fixtures(REPO_ROOT / ".cache" / "fixtures")
        args.models_dir = prepare_models_dir(REPO_ROOT / ".cache" / "demo-models", fixtures)
        args.checkpoint = args.checkpoint or "sd15_tiny.safetensors"
        args.adapter = args.adapter or "psa_demo_sd15.safetensors"
        args.profiles = args.profiles or [f"{name}.json" for name in DEMO_PROFILES]
        args.size, args.steps = args.size or 64, args.steps or 8
    graph = with_profile_count(json.loads((API_DIR / f"{WORKFLOW}.json").read_text()), len(args.profiles))
    prompt = substitute(graph, args.checkpoint, args.adapter, args.profiles, args.size, args.steps)
    args.output.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    try:
        with ComfyServer(comfyui_path(), python=sys.executable, models_dir=args.models_dir,
                         extra_folders=extra_folders) as server:
            entry = server.run(prompt, timeout=1800)
            images = server.images(entry)
    except ServerError as exc:
        if os.environ.get("PSA_TRACEBACK"):
            raise
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return 1
    for i, png in enumerate(images):
        path = args.output / f"{WORKFLOW}_{i:02d}.png"
        path.write_bytes(png)
        print(f"[demo] wrote {path}")
    print(f"[demo] profiles {args.profiles} -> {len(images)} image(s) in {time.monotonic() - started:.1f} s")
    return 0 if images else 1


if __name__ == "__main__":
    raise SystemExit(main())
