"""The Diffusion-DPO training loop for PSA adapters (``docs/reference-parity.md``, "Training").

One UNet only: the policy prediction runs the shared PSA layers (``psa_model.adapter.patch``) with a
differentiable :class:`UserConditioning`; the reference prediction is the same patched model
with PSA scale 0 (the patch is then a no-op), i.e. the frozen base UNet — the reference model
of Diffusion-DPO is the base UNet with a zero-initialised adapter, which computes the same.
``--ref-precision bf16`` computes the reference instead on a bf16 copy of the UNet, as the
reference implementation does (``docs/reference-parity.md``, "Precision of the reference branch").
Chosen and rejected latents share noise and timestep. All randomness of the loop comes from one ``torch.Generator`` whose state is
checkpointed, so ``--resume`` continues bit-exactly with a fixed ``--threads N``; with the default
(``--threads 0``, :mod:`training.threads`) a step may run on one thread or on all cores, which
changes its result only by float rounding (measured: parameters within 8e-10 after 3 steps).
"""
from __future__ import annotations

import contextlib
import json
import math
import time
from dataclasses import asdict
from pathlib import Path

import torch
from tqdm import tqdm

from psa_model.adapter.patch import UserConditioning
from psa_model.formats.adapter_file import read_adapter_tensors, save_native, save_reference_bin
from psa_model.profiles.boundaries import METADATA_KEY

from .accumulation import accumulate_gradients, step_micro_batches
from .boundaries import read_marker
from .checkpoint import load_checkpoint, restore_rng, rng_states, save_checkpoint
from .config import TrainConfig
from .data import SageDataset, data_fingerprint, load_split, random_subset
from .distributed import average_gradients, average_scalars, rank_and_world
from .epochs import PairOrder
from .latents import LatentSource
from .loss import DPOResult, dpo_loss_from_predictions
from .metrics import MetricsLog, plot
from .model import (
    NATIVE_RESOLUTION,
    BaseModel,
    Bf16ReferenceUNet,
    ModelMismatchError,
    build_adapter,
    keep_projection_in_bf16,
    load_base,
    patch_model,
    predict_eps,
)
from .recipes import recipe_arch
from .text import TextEncoder
from .threads import ThreadGovernor

AUTOCAST = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}


def make_optimizer(cfg: TrainConfig, params) -> torch.optim.Optimizer:
    params = list(params)
    if cfg.optimizer == "adafactor":
        from transformers.optimization import Adafactor  # noqa: PLC0415 - heavy (transformers): loaded only when used

        return Adafactor(params, lr=cfg.lr, scale_parameter=False, relative_step=False, warmup_init=False,
                         weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=cfg.lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=cfg.weight_decay)


def constant_with_warmup(optimizer: torch.optim.Optimizer, warmup_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """lr × step/warmup during warm-up, then lr (the reference's "constant with warm-up" schedule)."""
    def factor(step: int) -> float:
        return step / max(1, warmup_steps) if step < warmup_steps else 1.0

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


class Trainer:
    """Holds model, adapter, data and optimiser state; :meth:`train` runs to ``cfg.max_steps``."""

    def __init__(self, cfg: TrainConfig, base: BaseModel | None = None) -> None:
        self.cfg = cfg
        self.out = Path(cfg.output_dir)
        self.train_set: SageDataset = load_split(cfg.train_data, cfg.embeddings, cfg.skip_missing)
        if cfg.train_subset:
            self.train_set.pairs = random_subset(self.train_set.pairs, cfg.train_subset, cfg.train_subset_seed)
        self.rank, self.world = rank_and_world()
        # which pairs each micro-batch draws: one stream, or epochs ending in a short step (--epoch-end-step)
        self.pair_order = PairOrder(len(self.train_set), cfg.batch_size * self.world, cfg.epoch_end_step)
        self.val_set: SageDataset | None = (load_split(cfg.val_data, cfg.embeddings, cfg.skip_missing,
                                                       self.train_set.embed_dim) if cfg.val_data else None)
        self.base = base if base is not None else load_base(cfg.checkpoint)
        wanted = recipe_arch(cfg.recipe)
        if wanted is not None and wanted != self.base.arch:
            raise ModelMismatchError(f"--recipe {cfg.recipe} is for {wanted} but the checkpoint is {self.base.arch}: "
                                     f"use --recipe reference-{self.base.arch}")
        self.resolution = cfg.resolution or NATIVE_RESOLUTION[self.base.arch]
        self.adapter = build_adapter(self.base.model, self.base.arch, self.train_set.embed_dim, cfg.user_tokens,
                                     cfg.warm_start or None, seed=cfg.seed)
        if cfg.standardize_projection and not cfg.warm_start:
            self.adapter.user_proj.standardize_on(self.train_set.embedding_batch(self.train_set.pairs),
                                                  ridge=cfg.standardize_ridge)
        if cfg.projection_dtype == "bf16":
            keep_projection_in_bf16(self.adapter)
        self.patched = patch_model(self.base.model, self.adapter)
        self.model_sampling = self.patched.get_model_object("model_sampling")
        self.ref_unet = Bf16ReferenceUNet(self.patched) if cfg.ref_precision == "bf16" else None
        self.text = TextEncoder(self.base, self.resolution, cfg.caption_mode, cfg.text_cache_mb * 2**20)
        ckpt = Path(cfg.checkpoint)
        vae_identity = f"{ckpt.name}|{ckpt.stat().st_size}|{ckpt.stat().st_mtime_ns}" if ckpt.is_file() else ckpt.name
        self.latents = LatentSource(self.base.vae, self.patched, self.resolution, cfg.latent_cache or None,
                                    vae_identity, cfg.resize_filter, cfg.latent_memory_mb * 2**20,
                                    cfg.crop_rounding, cfg.vae_precision)
        self.optimizer = make_optimizer(cfg, self.adapter.parameters())
        self.scheduler = constant_with_warmup(self.optimizer, cfg.warmup_steps)
        self.gen = torch.Generator().manual_seed(cfg.seed)
        self.step = 0
        self.fingerprint = cfg.run_fingerprint()
        self.data_fp = data_fingerprint(self.train_set)
        # data built to separate boundaries from attributes (training/boundaries.py) says so in the adapter
        self.boundary_data = read_marker(cfg.train_data)
        self.metrics = MetricsLog(self.out / "metrics.jsonl")
        if cfg.resume:
            self._resume(cfg.resume)
        else:
            self.metrics.truncate_after(-1)

    # -- state -----------------------------------------------------------------------------
    def training_meta(self) -> dict:
        c = self.adapter.config
        return {"arch": c.arch, "layer_dims": list(c.layer_dims), "embed_dim": c.embed_dim,
                "cross_attention_dim": c.cross_attention_dim, "user_tokens": c.user_tokens, "steps": self.step,
                "beta": self.cfg.beta, "lr": self.cfg.lr, "optimizer": self.cfg.optimizer,
                "batch_size": self.cfg.batch_size, "grad_accum": self.cfg.grad_accum,
                "loss_divisor": self.cfg.effective_loss_divisor(), "epoch_end_step": self.cfg.epoch_end_step,
                "embedding_dtype": self.cfg.embedding_dtype,
                "ref_precision": self.cfg.ref_precision, "vae_precision": self.cfg.vae_precision,
                "resolution": self.resolution, "recipe": self.cfg.recipe, "data_fingerprint": self.data_fp,
                "base_checkpoint": Path(self.cfg.checkpoint).name, "run_fingerprint": self.fingerprint,
                **({METADATA_KEY: self.boundary_data} if self.boundary_data else {})}

    def _state(self) -> dict:
        return {"step": self.step, "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "rng": rng_states(self.gen), "order": list(self.pair_order.order),
                "cursor": self.pair_order.cursor,
                "run_fingerprint": self.fingerprint, "config": asdict(self.cfg)}

    def _resume(self, folder: str) -> None:
        adapter_file, state = load_checkpoint(folder, self.fingerprint)
        tensors, _ = read_adapter_tensors(adapter_file)
        with torch.no_grad():
            for name, p in self.adapter.named_parameters():
                p.copy_(tensors[name])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        restore_rng(state["rng"], self.gen)
        self.step = state["step"]
        self.pair_order.order, self.pair_order.cursor = list(state["order"]), state["cursor"]
        self.metrics.truncate_after(self.step)

    def save_checkpoint(self) -> Path:
        folder = save_checkpoint(self.out / "checkpoints" / f"step_{self.step}", self.adapter, self._state(),
                                 self.training_meta())
        plot(self.metrics.records, self.out / "training_plot.png")
        return folder

    # -- data ------------------------------------------------------------------------------
    def _next_pairs(self) -> list:
        """The next *global* batch (``world × batch_size`` pairs; see ``training.distributed``)."""
        return [self.train_set.pairs[i] for i in self.pair_order.next_batch(self.gen)]

    def _embeddings(self, dataset: SageDataset, pairs: list) -> torch.Tensor:
        emb = dataset.embedding_batch(pairs)
        if self.cfg.embedding_dtype == "fp16":  # rounded as the reference's data set hands them out
            emb = emb.half().float()
        return torch.zeros_like(emb) if self.cfg.zero_embeddings else emb

    def batch_inputs(self, dataset: SageDataset, pairs: list, gen: torch.Generator, augment: bool,
                     shard: tuple[int, int] = (0, 1)) -> dict:
        """Latents, noise, sigmas, text conds and embeddings for ``[chosen; rejected]`` (2b rows).

        Random draws are made for all of ``pairs`` (the global batch); ``shard = (rank, world)``
        keeps this rank's equal slice, so the draws do not depend on the number of processes.
        """
        cfg = self.cfg
        n = len(pairs)  # the global batch; every draw below is made for all n pairs
        flip = augment and cfg.random_flip
        flips_c = (torch.rand(n, generator=gen) < 0.5).tolist() if flip else [False] * n
        flips_r = (torch.rand(n, generator=gen) < 0.5).tolist() if flip and cfg.independent_flips else flips_c
        drop = (torch.rand(n, generator=gen) < cfg.caption_dropout).tolist() if augment else [False] * n
        rank, world = shard
        local = slice(rank * n // world, (rank + 1) * n // world)
        pairs, flips_c, flips_r, drop = pairs[local], flips_c[local], flips_r[local], drop[local]
        captions = ["" if d else p.caption for p, d in zip(pairs, drop)]
        mean_c, std_c = self.latents.get_moments([p.chosen for p in pairs], flips_c)
        mean_r, std_r = self.latents.get_moments([p.rejected for p in pairs], flips_r)
        shape = mean_c.shape[1:]
        noise = torch.randn((n, *shape), generator=gen)[local]
        t = torch.randint(cfg.min_timestep, cfg.max_timestep, (n,), generator=gen).float()[local]
        latents = torch.cat([mean_c, mean_r])
        if augment and cfg.latent_sampling == "sample":  # a fresh VAE posterior sample per image
            eps = torch.randn((2, n, *shape), generator=gen)[:, local].flatten(0, 1)
            latents = latents + torch.cat([std_c, std_r]) * eps
        if augment and cfg.noise_offset:
            noise = noise + cfg.noise_offset * torch.randn((n, shape[0], 1, 1), generator=gen)[local]
        if cfg.ref_precision == "bf16":  # the reference's latents and noise are bf16 tensors
            latents, noise = latents.bfloat16().float(), noise.bfloat16().float()
        sigma = self.model_sampling.sigma(t).float()
        conds = self.text.batch(captions)
        emb = self._embeddings(dataset, pairs)
        noise2, sigma2 = torch.cat([noise, noise]), torch.cat([sigma, sigma])
        noise_in = noise2
        if augment and cfg.input_perturbation:  # noisier input, same target (each image its own draw)
            extra = torch.randn((2, n, *shape), generator=gen)[:, local].flatten(0, 1)
            noise_in = noise2 + cfg.input_perturbation * extra
        x_noisy = self.model_sampling.noise_scaling(sigma2.reshape(-1, 1, 1, 1), noise_in, latents)
        return {"x_noisy": x_noisy, "sigma": sigma2, "noise": noise2,
                "conds": {k: torch.cat([v, v]) for k, v in conds.items()}, "embeddings": torch.cat([emb, emb])}

    # -- compute ---------------------------------------------------------------------------
    def _autocast(self):
        dtype = AUTOCAST[self.cfg.precision]
        if dtype is None:
            return contextlib.nullcontext()
        device = "cuda" if self.patched.model.device.type == "cuda" else "cpu"
        return torch.autocast(device, dtype=dtype)

    def predictions(self, inputs: dict, grad: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """(policy ε, reference ε) for a batch from :meth:`batch_inputs`.

        The reference runs first: its activations are freed before the policy's, which backward
        needs, are allocated, so a step never holds both sets at once.
        """
        if self.ref_unet is not None:  # bf16 weights, inputs and output, as the reference computes it
            ref = self.ref_unet.predict_eps(inputs["x_noisy"], inputs["sigma"], inputs["conds"])
        else:
            with torch.no_grad(), self._autocast():
                ref = predict_eps(self.patched, inputs["x_noisy"], inputs["sigma"], inputs["conds"],
                                  UserConditioning.off())
        with torch.set_grad_enabled(grad), self._autocast():
            user = UserConditioning.from_adapter(self.adapter, inputs["embeddings"])
            eps = predict_eps(self.patched, inputs["x_noisy"], inputs["sigma"], inputs["conds"], user,
                              checkpointing=self.cfg.gradient_checkpointing)
        return eps.float(), (ref if self.ref_unet is not None else ref.float())

    def dpo_result(self, inputs: dict, grad: bool = True) -> DPOResult:
        """The Diffusion-DPO loss of a batch from :meth:`batch_inputs` (reference errors in bf16
        under ``--ref-precision bf16``)."""
        eps, ref = self.predictions(inputs, grad)
        return dpo_loss_from_predictions(eps, ref, inputs["noise"].to(eps.device), self.cfg.beta,
                                         ref_dtype=ref.dtype)

    def train_step(self) -> dict:
        """One optimizer step (``grad_accum`` micro-batches, or what is left of the epoch under
        ``--epoch-end-step``; each loss divided by ``effective_loss_divisor``); returns mean loss
        and accuracy."""
        self.optimizer.zero_grad(set_to_none=True)
        losses, accs, branches = [], [], []

        def micro_batch() -> torch.Tensor:
            inputs = self.batch_inputs(self.train_set, self._next_pairs(), self.gen, augment=True,
                                       shard=(self.rank, self.world))
            res = self.dpo_result(inputs)
            losses.append(res.loss.item())
            accs.append(res.accuracy.item())
            branches.append(res.branch_means())
            return res.loss

        micro_batches = step_micro_batches(self.cfg.grad_accum, self.pair_order.epoch_length,
                                           self.pair_order.position)
        accumulate_gradients(micro_batch, micro_batches, self.cfg.effective_loss_divisor())
        average_gradients(self.adapter.parameters(), self.world)
        if self.cfg.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(self.adapter.parameters(), self.cfg.max_grad_norm)
        lr = self.scheduler.get_last_lr()[0]
        self.optimizer.step()
        self.scheduler.step()
        self.step += 1
        keys = list(branches[0])
        means = [sum(b[k] for b in branches) / len(branches) for k in keys]
        loss, acc, *means = average_scalars([sum(losses) / len(losses), sum(accs) / len(accs), *means], self.world)
        return {"kind": "train", "step": self.step, "loss": loss, "accuracy": acc, "lr": lr, **dict(zip(keys, means))}

    @torch.no_grad()
    def evaluate(self, dataset: SageDataset | None = None) -> dict:
        """Held-out implicit accuracy with fixed noise/timesteps (same pairs and noise every time)."""
        dataset = dataset or self.val_set
        gen = torch.Generator().manual_seed(self.cfg.seed + 1_000_003)
        pairs = dataset.pairs[: self.cfg.val_max_pairs]
        insides, losses, branches = [], [], []
        for i in range(0, len(pairs), self.cfg.batch_size):
            inputs = self.batch_inputs(dataset, pairs[i:i + self.cfg.batch_size], gen, augment=False)
            res = self.dpo_result(inputs, grad=False)
            insides.append(res.inside)
            losses.append(res.loss.item() * len(res.inside))
            branches.append({k: v * len(res.inside) for k, v in res.branch_means().items()})
        inside = torch.cat(insides)
        mse = {k: sum(b[k] for b in branches) / len(inside) for k in branches[0]}
        return {"kind": "val", "step": self.step, "loss": sum(losses) / len(inside),
                "accuracy": (inside > 0).float().mean().item(), "pairs": len(inside), **mse}

    # -- loop ------------------------------------------------------------------------------
    def train(self) -> Path:
        """Train to ``max_steps``, checkpointing and validating on schedule; returns the adapter file."""
        cfg = self.cfg
        main = self.rank == 0  # only rank 0 writes files, validates and shows progress
        self.out.mkdir(parents=True, exist_ok=True)
        if main:
            (self.out / "config.json").write_text(json.dumps(asdict(cfg), indent=2, sort_keys=True))
        bar = None
        if cfg.progress and main:
            bar = tqdm(total=cfg.max_steps, initial=self.step, desc="PSA DPO", dynamic_ncols=True)
        started = time.time()
        on_cpu = self.patched.model.device.type == "cpu"
        governor = ThreadGovernor(cfg.threads) if on_cpu else None
        while self.step < cfg.max_steps:
            record = governor.run(self.train_step) if governor is not None else self.train_step()
            if not math.isfinite(record["loss"]):
                raise FloatingPointError(f"loss became {record['loss']} at step {self.step}; lower the lr or "
                                         "use fp32/bf16 precision")
            if not main:
                continue
            self.metrics.log(record)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{record['loss']:.4f}", acc=f"{record['accuracy']:.2f}")
            if self.val_set is not None and cfg.validate_every > 0 and self.step % cfg.validate_every == 0:
                val = self.evaluate()
                self.metrics.log(val)
                if bar is not None:
                    bar.write(f"step {self.step}: val implicit acc {val['accuracy']:.3f} loss {val['loss']:.4f}")
            if cfg.checkpoint_every > 0 and self.step % cfg.checkpoint_every == 0:
                self.save_checkpoint()
        if bar is not None:
            bar.close()
        if governor is not None:
            torch.set_num_threads(governor.many)
        if not main:
            return self.out / "psa_adapter.safetensors"
        return self.finish(time.time() - started)

    def finish(self, seconds: float = 0.0) -> Path:
        meta = self.training_meta()
        meta["train_seconds"] = round(seconds, 1)
        path = self.out / "psa_adapter.safetensors"
        save_native(self.adapter, path, training=meta)
        if self.cfg.export_reference_bin:
            save_reference_bin(self.adapter, self.out / "psa_adapter.bin")
        if self.metrics.records:
            plot(self.metrics.records, self.out / "training_plot.png")
        return path
