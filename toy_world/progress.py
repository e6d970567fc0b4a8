"""How long the toy world takes on this machine, and one progress bar for the whole build.

docs/toy-world.md, "Cost": the build's time goes to two loops, the base UNet's colour-table
steps and the adapter's DPO steps in ``python -m training.train_psa``, plus a few fixed costs
(a Python process with torch and ComfyUI, the checkpoint written and read). :func:`calibrate`
times one step of each loop on the wired UNet at the shapes the build uses, so the estimate
follows the machine (its CPU, its threads, what else runs on it) rather than a constant. The
:class:`BuildProgress` bar counts *estimated seconds of work done*; tqdm's rate then corrects
the estimate as the build goes, and its "left" figure is for the whole build, not one stage.
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import Callable

import torch
from tqdm import tqdm

from .base_model import live_path_forward


@dataclass(frozen=True)
class Estimate:
    """Seconds per stage of the build still to run (``stages``), from the calibration below."""

    base_step_s: float
    dpo_step_s: float
    process_s: float            # a fresh Python process importing torch + ComfyUI, loading the checkpoint
    stages: dict[str, float]

    @property
    def total_s(self) -> float:
        return sum(self.stages.values())


def _timed(fn: Callable[[], object], repeats: int = 1) -> float:
    """Seconds of ``fn`` (median of ``repeats``) after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def calibrate(unet, base_batch: int, base_latent: int, dpo_batch: int, dpo_latent: int,
              base_steps: int, dpo_steps: int, process_s: float) -> Estimate:
    """Time one colour-table step and one DPO step's UNet work on ``unet`` (a fresh wired UNet).

    A DPO step runs the UNet three times on ``2·dpo_batch`` rows (reference, policy, backward;
    docs/benchmarks.md, "Training"): timed here as a forward without and a forward + backward
    with gradients, which is the same work without the adapter's (small) layers.
    """
    ctx_dim = unet.context_dim if hasattr(unet, "context_dim") else 768
    rows = 2 * dpo_batch
    x = torch.randn(rows, 4, dpo_latent, dpo_latent)
    t = torch.linspace(200, 999, rows)
    ctx = torch.randn(rows, 77, ctx_dim)
    params = [p for p in unet.parameters()]
    grads = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(False)

    def dpo() -> None:
        with torch.no_grad():
            unet(x, t, ctx)
        xg = x.clone().requires_grad_(True)
        unet(xg, t, ctx).square().mean().backward()

    xb = torch.randn(base_batch, 4, base_latent, base_latent, requires_grad=True)
    tb = torch.linspace(0, 999, base_batch)
    cb = torch.randn(base_batch, 77, ctx_dim)

    def base() -> None:
        live_path_forward(unet, xb, tb, cb).square().mean().backward()

    try:
        dpo_s, base_s = _timed(dpo), _timed(base)
    finally:
        for p, g in zip(params, grads):
            p.requires_grad_(g)
    stages = {"base UNet": base_steps * base_s + 0.5 * process_s, "users and pairs": 0.3 * process_s,
              "train_psa": process_s + dpo_steps * dpo_s}
    return Estimate(base_s, dpo_s, process_s, stages)


def describe(seconds: float) -> str:
    seconds = max(1, round(seconds))
    return f"{seconds // 60} min {seconds % 60:02d} s" if seconds >= 60 else f"{seconds} s"


class BuildProgress:
    """One bar over the remaining build, in estimated seconds of work; stage lines print above it."""

    def __init__(self, estimate: Estimate, log: Callable[[str], None]) -> None:
        self.estimate = estimate
        self.log = log
        self.done = 0.0
        self.stage_start = 0.0
        self.current = ""
        self.bar = tqdm(total=round(estimate.total_s, 1), file=sys.stdout, dynamic_ncols=True, mininterval=1.0,
                        desc="[toy-world] build", unit="s", smoothing=0.1,
                        bar_format="{desc} {percentage:3.0f}%|{bar}| {elapsed} elapsed, about {remaining} left")

    def write(self, msg: str) -> None:
        self.bar.write(msg)

    def stage(self, name: str) -> None:
        """Start stage ``name`` (a key of the estimate): the previous one counts as done."""
        self._to(self.stage_start + self.estimate.stages.get(self.current, 0.0))
        self.current, self.stage_start = name, self.done

    def fraction(self, share: float) -> None:
        """``share`` (0…1) of the current stage is done."""
        self._to(self.stage_start + min(1.0, max(0.0, share)) * self.estimate.stages.get(self.current, 0.0))

    def _to(self, value: float) -> None:
        if value > self.done:
            self.bar.update(round(value - self.done, 3))
            self.done = value

    def close(self) -> None:
        self.stage("")
        self.bar.close()
