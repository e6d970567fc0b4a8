"""Data-parallel training on torch.distributed (``torchrun --nproc_per_node K -m training.train_psa``).

Each optimizer step consumes one *global* batch of ``K × batch_size`` pairs, drawn (order, flips,
caption dropout, noise, timesteps) from the same seeded generator on every rank exactly as one
process would draw it; rank r computes rows ``r·b … (r+1)·b − 1`` and gradients are averaged, so
K processes follow the single-process trajectory for the same global batch. Gloo on CPU, NCCL on
CUDA; rank 0 alone writes files and validates.
"""
from __future__ import annotations

import os

import torch


def init_from_env() -> tuple[int, int]:
    """Join the process group torchrun describes (``WORLD_SIZE`` > 1); returns (rank, world size)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not torch.distributed.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        torch.distributed.init_process_group(backend=backend)
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    return rank_and_world()


def rank_and_world() -> tuple[int, int]:
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def average_gradients(parameters, world: int) -> None:
    """All-reduce and average every gradient (missing ones count as zero)."""
    if world == 1:
        return
    for p in parameters:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        torch.distributed.all_reduce(p.grad)
        p.grad /= world


def average_scalars(values: list[float], world: int) -> list[float]:
    """Mean of per-rank scalars (loss, accuracy) for logging."""
    if world == 1:
        return values
    t = torch.tensor(values, dtype=torch.float64)
    torch.distributed.all_reduce(t)
    return (t / world).tolist()
