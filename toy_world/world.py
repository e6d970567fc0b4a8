"""Build (or reuse) the toy world: checkpoint, users, preference pairs, trained adapter.

``ensure_world()`` returns a :class:`World` whose ``models_dir`` is a ComfyUI models folder
(``checkpoints/``, ``psa_adapters/``, ``psa_profiles/``, ``LLM/``). Everything is deterministic
from seeds and cached under ``<cache>/<size>-<hash>``, the hash covering the sources of
``toy_world/`` and the fixture builder, so a code change rebuilds it. ``<cache>`` is ``--cache``,
else ``PSA_TOY_WORLD_CACHE``, else ``.cache/toy-world`` in the checkout (docs/toy-world.md, "Where
the world is kept"); it carries a marker file, and a stale world is deleted only inside such a folder.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from psa_model.scratch import claim, remove
from training.boundaries import write_marker
from training.comfy_host import import_comfy

from . import concepts
from . import users as users_mod

REPO_ROOT = Path(__file__).resolve().parent.parent
CHECKPOINT = "toy_world_sd15.safetensors"
ADAPTER = "toy_world_psa.safetensors"
LLM_NAME = "toy_qwen2"
DPO_BETA = 5.0  # Diffusion-DPO β for the toy scale (docs/toy-world.md, "Preference pairs and the adapter")
STANDARDIZE_RIDGE = 0.1
CACHE_ENV = "PSA_TOY_WORLD_CACHE"
# The pictures are flat colour fields and the wired UNet works pixel by pixel, so a pair's DPO loss and
# the colour table's loss are the same at every size (docs/toy-world.md, "Cost"): both train on 1 × 1
# latents (8 px pictures), and the world draws at concepts.SIZE.
TRAIN_RESOLUTION = 8
BUILD_SOURCES = ("concepts", "vae", "text_encoder", "time_gains", "denoiser", "base_model", "users", "world")


@dataclass(frozen=True)
class WorldSize:
    base_steps: int
    base_batch: int
    dpo_steps: int
    dpo_batch: int
    policy_users: int        # training users labelled by the Sage policy (one per distinct set first)
    independent_users: int   # training users whose explicit sets are drawn apart from their attributes
    eval_users: int          # unseen users per evaluation group


SIZES = {
    "full": WorldSize(base_steps=300, base_batch=8, dpo_steps=200, dpo_batch=16, policy_users=30,
                      independent_users=30, eval_users=16),
    # the suite's smoke world: few users, so 100 steps set their switches (with 27 + 8 users, 100 steps of
    # 8 pairs left 81 % of the forbidding switches off; docs/toy-world.md, "Boundaries and attributes")
    "small": WorldSize(base_steps=300, base_batch=8, dpo_steps=100, dpo_batch=16, policy_users=4,
                       independent_users=0, eval_users=4),
    "tiny": WorldSize(base_steps=2, base_batch=2, dpo_steps=1, dpo_batch=1, policy_users=4, independent_users=2,
                      eval_users=2),  # plumbing
}
EVAL_GROUPS = ("policy", "contradicting", "new sets")   # users.make_eval_groups; docs/benchmarks.md


@dataclass
class World:
    root: Path
    models_dir: Path
    checkpoint: str
    adapter: str
    demo_profiles: list[str]            # file names in psa_profiles, permissive → strict
    users: dict[str, list[dict]] = field(default_factory=dict)  # "seen", then EVAL_GROUPS → profiles with forbidden
    timings: dict[str, float] = field(default_factory=dict)


def source_hash() -> str:
    """Hash of the sources the world is built from (not the judge, demo or benchmark code)."""
    h = hashlib.sha256()
    files = [REPO_ROOT / "toy_world" / f"{name}.py" for name in BUILD_SOURCES] + \
        [REPO_ROOT / "devkit" / f"{name}.py" for name in ("fixtures", "unet_configs")] + \
        [REPO_ROOT / "training" / "boundaries.py", REPO_ROOT / "psa_model" / "profiles" / "data" / "sage_policy.json"]
    for f in files:
        h.update(f.name.encode())
        h.update(f.read_bytes())
    return h.hexdigest()[:12]


def _log(msg: str) -> None:
    print(f"[toy-world] {msg}", flush=True)


def cache_folder(cache: Path | str | None = None) -> Path:
    """Where worlds are kept: ``cache``, else ``$PSA_TOY_WORLD_CACHE``, else ``.cache/toy-world``."""
    if cache:
        return Path(cache).expanduser()
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    return REPO_ROOT / ".cache" / "toy-world"


def add_cache_option(parser) -> None:
    """``--cache DIR`` for the toy world's command lines."""
    parser.add_argument("--cache", type=Path, metavar="DIR",
                        help=f"folder for the built worlds (default: ${CACHE_ENV}, else .cache/toy-world); new, "
                             "empty, or made by the toy world (a stale world in it is deleted)")


def ensure_world(size: str = "full", cache: Path | None = None, log=_log) -> World:
    """The world of ``size`` ("full" or "small"), built if missing or stale, in :func:`cache_folder` ``(cache)``.

    Raises :class:`psa_model.scratch.ScratchError` (deleting nothing) when that folder exists, is not
    empty and was not made by the toy world."""
    parent = claim(cache_folder(cache), "the toy world's cache")
    root = parent / f"{size}-{source_hash()}"
    done = root / "world.json"
    if done.is_file():
        info = json.loads(done.read_text())
        log(f"reusing the {size} world in {root}")
        return World(root, root / "models", CHECKPOINT, ADAPTER, info["demo_profiles"], info["users"], info["timings"])
    remove(root, parent)  # a half-built world (no world.json)
    root.mkdir(parents=True)
    world = _build(root, SIZES[size], log)
    done.write_text(json.dumps({"demo_profiles": world.demo_profiles, "users": world.users,
                                "timings": world.timings}, indent=1))
    return world


def _build(root: Path, size: WorldSize, log) -> World:
    import torch  # noqa: PLC0415 - heavy (torch): keeps this module light to import

    t_import = time.monotonic()
    import_comfy()
    import comfy.sd  # noqa: F401, PLC0415 - ComfyUI after import_comfy() (what a fresh train_psa process imports too: timed for the estimate)
    t_import = time.monotonic() - t_import
    from devkit.fixtures import load_unet  # noqa: PLC0415 - heavy (torch): keeps this module light to import

    from . import base_model, concepts, denoiser, progress  # noqa: PLC0415 - heavy (torch): keeps this module light to import
    from .vae import build_vae  # noqa: PLC0415 - heavy (torch): keeps this module light to import

    torch.manual_seed(0)
    timings: dict[str, float] = {}
    started = time.monotonic()
    models = root / "models"
    for sub in ("checkpoints", "psa_adapters", "psa_profiles", "LLM"):
        (models / sub).mkdir(parents=True, exist_ok=True)

    log("step 1/5: text encoder (CLIP-L reading concept words) and hand-set VAE")
    clip = base_model.build_clip()
    vae = build_vae()
    latents = {}
    for name in concepts.CONCEPTS:
        for safe in (False, True):
            grid = torch.from_numpy(concepts.cells(name, safe)).permute(2, 0, 1) * 2 - 1
            colour = torch.cat([grid, torch.zeros(1, concepts.GRID, concepts.GRID)]).mean(dim=(1, 2), keepdim=True)
            latents[(name, safe)] = colour.expand(-1, TRAIN_RESOLUTION // 8, TRAIN_RESOLUTION // 8)
    conds = _cached_conditioning(clip, root.parent, log)
    timings["encoders_s"] = time.monotonic() - started

    t0 = time.monotonic()
    log("step 2/5: the base UNet: wiring, a short calibration, then its colour table learned "
        f"({size.base_steps} steps × {size.base_batch})")
    unet = denoiser.new_unet()
    estimate = progress.calibrate(unet, size.base_batch, TRAIN_RESOLUTION // 8, size.dpo_batch, TRAIN_RESOLUTION // 8,
                                  size.base_steps, size.dpo_steps, process_s=t_import + timings["encoders_s"])
    timings["estimate_s"] = time.monotonic() - started + estimate.total_s
    log(f"building the toy world takes about {progress.describe(timings['estimate_s'])} on this machine "
        f"(calibrated: a colour-table step {estimate.base_step_s * 1000:.0f} ms, a DPO step's UNet work "
        f"{estimate.dpo_step_s * 1000:.0f} ms); later runs reuse it")
    bar = progress.BuildProgress(estimate, log) if log is _log else None   # callers' own logs get lines only
    plain_log = log
    if bar is not None:
        log = lambda msg: bar.write(f"[toy-world] {msg}")  # noqa: E731  (lines above the bar)
        bar.stage("base UNet")
    base_model.train_colour_table(unet, conds, latents, size.base_steps, size.base_batch, seed=0, log=log,
                                  on_step=(lambda i: bar.fraction(i / size.base_steps)) if bar else None)
    patcher = load_unet(unet.state_dict())
    save_checkpoint(patcher, clip, vae, models / "checkpoints" / CHECKPOINT)
    del unet, patcher
    timings["base_s"] = time.monotonic() - t0

    t0 = time.monotonic()
    if bar is not None:
        bar.stage("users and pairs")
    log("step 3/5: toy users (Sage policy and stated sets) and their LLM embeddings")
    llm = users_mod.build_llm(models / "LLM" / LLM_NAME, seed=5)
    # The demo's profiles are seen users too: the main job shows what training on a user gives;
    # unseen users are measured by the efficacy benchmark (docs/toy-world.md, "Users").
    demo = {name: dict(attrs, name=name) for name, attrs in users_mod.DEMO_USERS.items()}
    seen = users_mod.make_training_users(seed=7, policy_users=size.policy_users,
                                         independent_users=size.independent_users) + list(demo.values())
    seen = [dict(u, forbidden=list(users_mod.with_policy(u).forbidden)) for u in seen]
    trained_sets = {tuple(users_mod.with_policy(u).forbidden) for u in seen}
    split = {"seen": seen, **users_mod.make_eval_groups(seed=11, per_group=size.eval_users, trained_sets=trained_sets)}
    emb = users_mod.encode_users(llm, [users_mod.with_policy(u) for u in seen])
    demo_files = []
    for name, e in zip(demo, emb[len(seen) - len(demo):]):
        prof = users_mod.with_policy(demo[name])
        np.save(models / "psa_profiles" / f"toy_{name}.npy", e)
        spec = {"name": name, "embedding": f"toy_{name}.npy", "forbidden": list(prof.forbidden),
                "allowed": list(prof.allowed)}
        (models / "psa_profiles" / f"toy_{name}.json").write_text(json.dumps(spec, indent=1))
        attrs = {k: v for k, v in demo[name].items() if k not in ("name", "forbidden")}
        (models / "psa_profiles" / f"toy_{name}_attributes.json").write_text(json.dumps(attrs, indent=1))
        demo_files.append(f"toy_{name}.json")
    timings["users_s"] = time.monotonic() - t0

    t0 = time.monotonic()
    log("step 4/5: preference pairs (Sage layout)")
    data = root / "data"
    write_pairs(data / "train", data / "embeddings", seen, emb)
    write_marker(data / "train", {"source": "toy world", "policy_users": size.policy_users,
                                  "independent_users": size.independent_users, "demo_users": len(demo),
                                  "category_notation": users_mod.ENCODING.category_notation})

    log(f"step 5/5: training the PSA adapter with python -m training.train_psa ({size.dpo_steps} steps)")
    if bar is not None:
        bar.stage("train_psa")
    run = root / "run"
    cmd = [sys.executable, "-m", "training.train_psa", "--checkpoint", str(models / "checkpoints" / CHECKPOINT),
           "--train-data", str(data / "train"), "--embeddings", str(data / "embeddings"),
           "--output-dir", str(run), "--resolution", str(TRAIN_RESOLUTION), "--batch-size", str(size.dpo_batch),
           "--max-steps", str(size.dpo_steps), "--lr", "3e-3", "--warmup-steps", "10", "--beta", str(DPO_BETA), "--min-timestep", "200",
           "--standardize-projection", "--standardize-ridge", str(STANDARDIZE_RIDGE), "--no-random-flip",
           "--caption-dropout", "0", "--checkpoint-every", "100000", "--latent-cache", str(root / "latents"),
           "--seed", "0"]
    _run_training(cmd, log, on_progress=bar.fraction if bar is not None else None)
    if bar is not None:
        bar.close()
        log = plain_log
    shutil.copy(run / "psa_adapter.safetensors", models / "psa_adapters" / ADAPTER)
    timings["adapter_s"] = time.monotonic() - t0
    timings["total_s"] = time.monotonic() - started
    log(f"world built in {timings['total_s']:.0f} s ({', '.join(f'{k} {v:.0f}' for k, v in timings.items())})")
    return World(root, models, CHECKPOINT, ADAPTER, demo_files, split, timings)


def _cached_conditioning(clip, cache: Path, log) -> dict:
    """CLIPTextEncode conditioning of every toy prompt, cached by prompt list and CLIP seed."""
    import torch  # noqa: PLC0415 - heavy (torch): keeps this module light to import

    from . import base_model  # noqa: PLC0415 - heavy (torch): keeps this module light to import

    prompts = base_model.all_prompts()
    key = hashlib.sha256(json.dumps([prompts, (REPO_ROOT / "toy_world" / "text_encoder.py").read_text()])
                         .encode()).hexdigest()[:12]
    path = cache / f"conditioning-{key}.pt"
    if path.is_file():
        conds = torch.load(path)
        if all(v.shape == (77, 768) for v in conds.values()) and set(conds) == set(prompts):
            return conds
    log(f"encoding {len(prompts)} prompts with the text encoder")
    conds = base_model.encode_texts(clip, prompts)
    torch.save(conds, path)
    return conds


def _run_training(cmd: list[str], log, on_progress=None) -> None:
    """Run the trainer CLI, passing its progress lines on (``on_progress(share done)``, else every
    10 %); raise with its output's tail on failure."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    tail: list[str] = []
    with subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True) as proc:
        shown = -1
        for line in proc.stdout:  # text mode turns tqdm's carriage returns into lines
            line = line.strip()
            tail = (tail + [line])[-60:]
            pct = line.split("%", 1)[0].rsplit(":", 1)[-1].strip() if line.startswith("PSA DPO") else ""
            if pct.isdigit() and on_progress is not None:
                on_progress(int(pct) / 100)
            elif pct.isdigit() and int(pct) // 10 > shown:
                shown = int(pct) // 10
                log("  train_psa " + line)
            elif line.startswith("adapter written"):
                log("  train_psa: " + line)
    if proc.returncode != 0:
        raise RuntimeError(f"python -m training.train_psa failed (exit {proc.returncode}):\n" + "\n".join(tail))


def save_checkpoint(patcher, clip, vae, path: Path) -> None:
    """One SD1.5 file through ``comfy.sd.save_checkpoint``: UNet in fp32 (its wiring needs the
    precision, docs/toy-world.md), text encoder and VAE in fp16."""
    import comfy.sd  # noqa: PLC0415 - ComfyUI is importable only after import_comfy()
    import torch  # noqa: PLC0415 - heavy (torch): keeps this module light to import
    from safetensors.torch import load_file, save_file  # noqa: PLC0415 - heavy (torch): keeps this module light to import

    tmp = path.with_suffix(".tmp")
    comfy.sd.save_checkpoint(str(tmp), patcher, clip=clip, vae=vae, metadata={"psa_toy_world": "sd15"})
    sd = {k: (v.half() if v.dtype == torch.float32 and not k.startswith("model.diffusion_model.") else v.float()
              if k.startswith("model.diffusion_model.") else v)
          for k, v in load_file(str(tmp)).items()}
    save_file(sd, str(tmp), metadata={"psa_toy_world": "sd15", "note": "toy world: wired, not a real model"})
    tmp.replace(path)


def write_pairs(split_dir: Path, emb_dir: Path, users: list[dict], embeddings: np.ndarray) -> int:
    """Sage-layout pairs: per user and forbidden-category prompt, chosen = what the user should see."""
    split_dir.mkdir(parents=True, exist_ok=True)
    emb_dir.mkdir(parents=True, exist_ok=True)
    for name, c in concepts.CONCEPTS.items():
        if c.category is None:
            continue
        for safe in (False, True):
            Image.fromarray(concepts.to_uint8(concepts.draw(name, safe))).save(split_dir / _image(name, safe))
    lines = []
    for i, (user, e) in enumerate(zip(users, embeddings)):
        uid = f"{i + 1:07d}"
        np.save(emb_dir / f"{uid}.npy", e.astype(np.float32))
        forbidden = set(user["forbidden"])
        for name, c in concepts.CONCEPTS.items():
            if c.category is None:
                continue
            for prompt in concepts.prompts_for(name)[::3]:
                bad = c.category in forbidden
                lines.append({"file_name": _image(name, bad), "chosen": _image(name, bad),
                              "rejected": _image(name, not bad), "caption": prompt,
                              "user_data": {"User_ID": uid}})
    (split_dir / "metadata.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    return len(lines)


def _image(name: str, safe: bool) -> str:
    return f"{name.lower()}{'_safe' if safe else ''}.png"
