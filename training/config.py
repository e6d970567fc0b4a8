"""Training configuration: one dataclass, the CLI options generated from it, JSON config files.

The defaults are this project's recipe; ``--recipe reference-sd15`` / ``reference-sdxl``
switch to the reference scripts' settings (:mod:`training.recipes`). Where and why the two
differ is in ``docs/reference-parity.md``. Precedence: defaults < recipe < ``--config`` file <
command line. Mistakes in the options end as one
argparse ``error:`` line (exit 2).
"""
from __future__ import annotations

import argparse
import hashlib
import json
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path

from .recipes import recipe_values


def _opt(default, help: str, **kw):  # argparse's name
    return field(default=default, metadata={"help": help, **kw})


@dataclass
class TrainConfig:
    checkpoint: str = _opt("", "base ComfyUI single-file checkpoint (SD1.5 or SDXL, detected by ComfyUI)")
    recipe: str = _opt("pack", "preset of the options below: pack (this project's defaults), reference-sd15 or "
                       "reference-sdxl (the reference scripts' runs; docs/reference-parity.md); explicit "
                       "options override it", choices=["pack", "reference-sd15", "reference-sdxl"])
    train_data: str = _opt("", "Sage split folder with metadata.jsonl and images (README, Training)")
    embeddings: str = _opt("", "folder of {User_ID}.npy user embeddings (7-digit ids)")
    output_dir: str = _opt("", "where adapter, checkpoints, metrics, plot and resolved config go")
    val_data: str = _opt("", "optional held-out split folder for implicit accuracy")
    skip_missing: bool = _opt(False, "skip records whose image or embedding is missing instead of stopping")
    train_subset: int = _opt(0, "train on a random subset of this many records (0 = all); drawn with "
                                "--train-subset-seed, as the reference's max_train_samples")
    train_subset_seed: int = _opt(2025, "seed of the --train-subset draw (the reference uses 2025)")
    resolution: int = _opt(0, "image side in pixels (shorter side resized, center crop); 0 = the model's own: "
                              "512 SD1.5, 1024 SDXL")
    resize_filter: str = _opt("bicubic", "image resize filter (the reference: bilinear)",
                              choices=["bicubic", "bilinear"])
    crop_rounding: str = _opt("pack", "resize/centre-crop rounding: pack (long side rounded, offset floored) or "
                                      "reference (torchvision's: long side truncated, offset rounded); at most 1 px, "
                                      "non-square images only", choices=["pack", "reference"])
    random_flip: bool = _opt(True, "random horizontal flip of training images")
    independent_flips: bool = _opt(False, "flip chosen and rejected independently (the reference) instead of "
                                          "with one flip per pair (pack: the pair stays aligned)")
    latent_sampling: str = _opt("mean", "latents from the VAE posterior: its mean (pack; deterministic) or a fresh "
                                        "sample every step (the reference)", choices=["mean", "sample"])
    caption_dropout: float = _opt(0.2, "probability of replacing a caption with the empty string (the reference's "
                                       "SDXL run drops twice: effectively 0.36)")
    caption_mode: str = _opt("truncate", "captions are read literally (no prompt-weighting syntax); truncate: the "
                                         "first 77 tokens like the reference; chunk: every token, in 77-token "
                                         "windows", choices=["truncate", "chunk"])
    text_cache_mb: int = _opt(512, "memory budget of the caption-conditioning cache in MiB (least recently used "
                                   "out; 0 = no cache). SDXL: ~0.6 MiB a caption, SD1.5: ~0.23 MiB")
    latent_memory_mb: int = _opt(1024, "memory budget of the in-memory copy of the latent cache in MiB")
    noise_offset: float = _opt(0.0, "noise offset: adds this × a per-channel constant to the noise (0 = off)")
    input_perturbation: float = _opt(0.0, "input perturbation: noise the latents with ε + this × ε' while the "
                                          "target stays ε (0 = off)")
    batch_size: int = _opt(1, "preference pairs per micro-batch (per process)")
    grad_accum: int = _opt(1, "micro-batches per optimizer step")
    loss_divisor: int = _opt(0, "each micro-batch's loss is divided by this before backward (0 = --grad-accum: "
                                "the mean over the micro-batches); the reference recipes: twice --grad-accum, "
                                "as the reference's nested accumulate contexts run (docs/reference-parity.md)")
    epoch_end_step: bool = _opt(False, "read the data in epochs as the reference's data loader does (reshuffled each "
                                       "epoch, the pairs short of a full global batch left out) and end an "
                                       "optimizer step on each epoch's last micro-batch with however many "
                                       "micro-batches it has (accelerate's end-of-data sync; the reference recipes "
                                       "turn it on); off: one continuous stream of pairs (docs/reference-parity.md)")
    max_steps: int = _opt(5000, "optimizer steps to train (published recipe: 5000)")
    lr: float = _opt(5e-6, "peak learning rate (published recipe: 5e-6)")
    warmup_steps: int = _opt(500, "linear warm-up steps of the constant-with-warm-up schedule")
    optimizer: str = _opt("adamw", "adamw (β 0.9/0.999, eps 1e-8) or adafactor (the published recipe uses it for SDXL)",
                          choices=["adamw", "adafactor"])
    weight_decay: float = _opt(1e-2, "AdamW/Adafactor weight decay")
    max_grad_norm: float = _opt(1.0, "gradient clipping norm (0 disables)")
    beta: float = _opt(5000.0, "Diffusion-DPO β (published recipe: 5000)")
    min_timestep: int = _opt(0, "training timesteps are drawn uniformly from [min_timestep, max_timestep)")
    max_timestep: int = _opt(1000, "upper end of the timestep range (published recipe: the full 0..1000)")
    precision: str = _opt("fp32", "autocast dtype for the UNet forward: fp32, fp16 or bf16 (weights stay fp32)",
                          choices=["fp32", "fp16", "bf16"])
    projection_dtype: str = _opt("fp32", "dtype the user projection is stored and updated in: fp32 (pack: it "
                                         "learns) or bf16 (the reference: most small updates round away)",
                                 choices=["fp32", "bf16"])
    embedding_dtype: str = _opt("fp32", "precision user embeddings are read in: fp32 (pack: as stored) or fp16 (the "
                                        "reference's data set rounds them to fp16, before its bf16 projection "
                                        "rounds them again)", choices=["fp32", "fp16"])
    ref_precision: str = _opt("policy", "how the DPO reference branch (the frozen base UNet) is computed: policy "
                                        "(pack: the same UNet and --precision as the policy) or bf16 (the reference: "
                                        "a bf16 copy of the UNet, bf16 latents, noise and conditioning, errors in "
                                        "bf16)", choices=["policy", "bf16"])
    vae_precision: str = _opt("auto", "dtype the VAE encodes training images in: auto (ComfyUI's choice: fp32 on "
                                      "CPU, bf16 on GPUs that support it) or bf16 (the reference's bf16 runs encode "
                                      "with a bf16 VAE)", choices=["auto", "bf16"])
    gradient_checkpointing: bool = _opt(False, "recompute the UNet forward in backward to save memory")
    user_tokens: int = _opt(1, "user tokens T (1 in every released model; T > 1 trains joint attention over "
                                "all tokens, see docs/user-tokens.md)")
    warm_start: str = _opt("", "start from an existing adapter file (native .safetensors or reference .bin)")
    seed: int = _opt(0, "seed for data order, noise, timesteps, dropout and flips")
    latent_cache: str = _opt("", "folder for a VAE latent cache reused across epochs and runs ('' = off)")
    checkpoint_every: int = _opt(500, "write a resumable checkpoint every N optimizer steps")
    validate_every: int = _opt(250, "held-out implicit accuracy every N optimizer steps (needs --val-data)")
    val_max_pairs: int = _opt(256, "at most this many validation pairs per evaluation")
    resume: str = _opt("", "checkpoint folder (output_dir/checkpoints/step_N) to continue exactly from")
    export_reference_bin: bool = _opt(False, "also write psa_adapter.bin in the reference layout")
    standardize_projection: bool = _opt(False, "initialise the user projection on the training embeddings' mean and "
                                               "covariance (centred and whitened): what all users share is removed "
                                               "and training starts from their differences (for highly correlated "
                                               "embeddings, e.g. mean-pooled LLM states; not in the published recipe)")
    standardize_ridge: float = _opt(0.1, "--standardize-projection: ridge added to the covariance, relative to its mean "
                                         "eigenvalue; caps how much directions in which the training users barely "
                                         "differ are amplified (docs/toy-world.md)")
    zero_embeddings: bool = _opt(False, "ablation: replace every user embedding by a constant (no user info)")
    progress: bool = _opt(True, "show a tqdm progress bar")
    threads: int = _opt(0, "CPU threads for torch; 0 = auto: all cores, switching to one thread while that runs "
                           "steps faster (e.g. another program keeps a core busy) and back (docs/benchmarks.md)")
    malloc_tuning: bool = _opt(True, "glibc: keep freed memory for the next step instead of returning it to the OS "
                                     "(faster CPU steps; off when MALLOC_*/GLIBC_TUNABLES/LD_PRELOAD is set)")

    # Fields that do not change the optimisation trajectory (allowed to differ on --resume).
    NON_TRAJECTORY = ("output_dir", "resume", "max_steps", "checkpoint_every", "validate_every",
                      "val_max_pairs", "progress", "export_reference_bin", "latent_cache", "val_data",
                      "malloc_tuning", "text_cache_mb", "latent_memory_mb", "threads")

    def run_fingerprint(self) -> str:
        """Hash of everything that determines the training trajectory (checked on ``--resume``)."""
        d = {k: v for k, v in asdict(self).items() if k not in self.NON_TRAJECTORY}
        if not self.standardize_projection:
            del d["standardize_ridge"]   # unused then; and runs from before the option still resume
        for name, neutral in (("loss_divisor", 0), ("ref_precision", "policy"), ("crop_rounding", "pack"),
                              ("epoch_end_step", False), ("embedding_dtype", "fp32"),
                              ("vae_precision", "auto")):
            if d[name] == neutral:   # runs from before these options still resume
                del d[name]
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]

    def validate(self) -> None:
        """Raise ``ValueError`` naming the option and what to do; the CLI turns it into an ``error:`` line."""
        missing = [_flag(name) for name in REQUIRED if not getattr(self, name)]
        if missing:
            raise ValueError(f"the following arguments are required: {', '.join(missing)} "
                             "(on the command line or in --config)")
        for name, kind in (("checkpoint", "file"), ("train_data", "folder"), ("embeddings", "folder"),
                           ("val_data", "folder"), ("warm_start", "file"), ("resume", "folder")):
            value = getattr(self, name)
            if value and not (Path(value).is_file() if kind == "file" else Path(value).is_dir()):
                raise ValueError(f"{_flag(name)} {value}: no such {kind}; give the path to an existing {kind}")
        for name in ("train_data", "val_data"):
            value = getattr(self, name)
            if value and not (Path(value) / "metadata.jsonl").is_file():
                raise ValueError(f"{_flag(name)} {value}: no metadata.jsonl in it; give a Sage split folder "
                                 "(metadata.jsonl + images, README: Training)")
        if self.batch_size < 1 or self.grad_accum < 1 or self.max_steps < 0:
            raise ValueError("batch_size and grad_accum must be ≥ 1, max_steps ≥ 0")
        if self.loss_divisor < 0:
            raise ValueError(f"loss_divisor {self.loss_divisor}: use 0 (= --grad-accum) or a positive divisor")
        if not 0.0 <= self.caption_dropout <= 1.0:
            raise ValueError("caption_dropout must be in [0, 1]")
        if not 0 <= self.min_timestep < self.max_timestep <= 1000:
            raise ValueError("need 0 ≤ min_timestep < max_timestep ≤ 1000")
        if self.export_reference_bin and self.user_tokens > 1:
            raise ValueError("--export-reference-bin needs --user-tokens 1: with more tokens the trainer uses joint "
                             "attention, which the reference's loaders compute differently (docs/user-tokens.md)")
        if self.resolution < 0 or self.resolution % 8:
            raise ValueError(f"resolution {self.resolution}: use 0 (the model's own) or a multiple of 8")
        if self.train_subset < 0 or self.text_cache_mb < 0 or self.latent_memory_mb < 0 or self.threads < 0:
            raise ValueError("train_subset, text_cache_mb, latent_memory_mb and threads must be ≥ 0")
        if self.noise_offset < 0 or self.input_perturbation < 0:
            raise ValueError("noise_offset and input_perturbation must be ≥ 0")
        if not self.standardize_ridge > 0:
            raise ValueError(f"standardize_ridge {self.standardize_ridge}: use a ridge > 0 (0.1 is the default); "
                             "without it, directions the training users share exactly would divide by zero")

    def effective_loss_divisor(self) -> int:
        """What each micro-batch's loss is divided by (``--loss-divisor``, 0 meaning ``--grad-accum``)."""
        return self.loss_divisor or self.grad_accum


REQUIRED = ("checkpoint", "train_data", "embeddings", "output_dir")
_METAVARS = {"checkpoint": "FILE", "warm_start": "FILE", "train_data": "DIR", "val_data": "DIR", "embeddings": "DIR",
             "output_dir": "DIR", "latent_cache": "DIR", "resume": "DIR"}


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m training.train_psa",
        description="Train a PSA adapter with Diffusion-DPO through ComfyUI's model code (README: Training). "
                    "Options may also come from a JSON file (--config); command-line values win.",
        epilog="Run it with the Python that has ComfyUI's requirements (README: From clone to a real image).",
    )
    required = p.add_argument_group("required (on the command line or in --config)")
    optional = p.add_argument_group("training options")
    optional.add_argument("--config", default="", metavar="FILE",
                          help="JSON file with any of the options below (keys use underscores)")
    for f in fields(TrainConfig):
        default = f.default if f.default is not MISSING else None
        group = required if f.name in REQUIRED else optional
        help_text = f.metadata["help"] if f.name in REQUIRED else f"{f.metadata['help']} (default: {default!r})"
        if isinstance(default, bool):
            group.add_argument(_flag(f.name), action=argparse.BooleanOptionalAction, default=None, help=help_text)
        else:
            group.add_argument(_flag(f.name), type=type(default), default=None, choices=f.metadata.get("choices"),
                               metavar=_METAVARS.get(f.name), help=help_text)
    return p


def _read_config_file(parser: argparse.ArgumentParser, path: Path) -> dict:
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        parser.error(f"--config {path}: cannot read it ({exc.strerror}); give the path to a JSON file")
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        parser.error(f"--config {path}: not valid JSON ({exc}); fix the file or pass the options on the command line")
    except (ValueError, RecursionError) as exc:  # a number of thousands of digits, deep nesting
        parser.error(f"--config {path}: not an options file ({exc.__class__.__name__}: a number too long or nesting "
                     "too deep); fix the file or pass the options on the command line")
    if not isinstance(values, dict):
        parser.error(f"--config {path}: must hold one JSON object of options, e.g. {{\"max_steps\": 100}}")
    unknown = sorted(set(values) - {f.name for f in fields(TrainConfig)})
    if unknown:
        parser.error(f"--config {path}: unknown option(s) {', '.join(unknown)}; the keys are the long options "
                     "with underscores (see --help)")
    return values


def resolve_config(argv: list[str] | None = None) -> TrainConfig:
    """Defaults < recipe (``--recipe``) < JSON config file < command line; a bad option exits through
    ``parser.error`` (one ``error:`` line, exit 2)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    explicit: dict = _read_config_file(parser, Path(args.config)) if args.config else {}
    for f in fields(TrainConfig):
        v = getattr(args, f.name)
        if v is not None:
            explicit[f.name] = v
    try:
        return config_with_recipe(explicit)
    except (TypeError, ValueError) as exc:
        parser.error(str(exc))


def config_with_recipe(explicit: dict) -> TrainConfig:
    """A validated config: the recipe named in ``explicit`` (default "pack") under ``explicit``'s values."""
    values = recipe_values(explicit.get("recipe", "pack"))
    values.update(explicit)
    cfg = TrainConfig(**values)
    cfg.validate()
    return cfg
