"""Gradient accumulation: micro-batches per optimiser step and the divisor of each micro-batch's loss.

Usually the two are the same number (the gradient is the mean over the micro-batches). The
reference's training loop enters two nested ``accelerator.accumulate(...)`` contexts per
micro-batch, which splits them apart; :func:`nested_accumulate_cadence` derives the pair it
ends up with, and :func:`step_micro_batches` the short step accelerate forces at an epoch's end
(``docs/reference-parity.md``, "Gradient accumulation as the reference runs it").

No ComfyUI import: this module is tested in the ``core`` tier.
"""
from __future__ import annotations

import math
from typing import Callable

import torch


def nested_accumulate_cadence(accumulation_steps: int, contexts: int) -> tuple[int, int]:
    """``(micro-batches per optimiser step, loss divisor)`` of a loop that enters ``contexts``
    nested ``accelerate`` accumulate contexts per micro-batch, configured with
    ``gradient_accumulation_steps = accumulation_steps``.

    Entering a context adds one to the accelerator's step counter and sets "sync gradients"
    to ``counter % accumulation_steps == 0``; the optimiser wrapper steps only when that flag is
    set, and the body sees the flag the innermost context left. After micro-batch ``m`` the
    counter is ``contexts · m``, so the optimiser steps every
    ``accumulation_steps / gcd(accumulation_steps, contexts)`` micro-batches, while
    ``Accelerator.backward`` still divides every loss by ``accumulation_steps``.
    (An epoch's last batch also forces a step and resets the counter: :func:`step_micro_batches`.)
    """
    if accumulation_steps < 1 or contexts < 1:
        raise ValueError(f"need accumulation_steps ≥ 1 and contexts ≥ 1, got {accumulation_steps}, {contexts}")
    return accumulation_steps // math.gcd(accumulation_steps, contexts), accumulation_steps


def step_micro_batches(micro_batches: int, epoch_length: int, position: int) -> int:
    """Micro-batches the next optimiser step accumulates.

    ``epoch_length`` is the number of micro-batches in an epoch (0: the data is one stream
    without epochs) and ``position`` how many of the current epoch were already drawn. Without
    epochs every step takes ``micro_batches``. With them, an epoch's last micro-batch also ends
    a step, with however many micro-batches were left, and the next epoch starts counting
    afresh: accelerate's data loader flags its last batch, and entering ``accumulate`` then
    forces "sync gradients" and resets the step counter to 0 instead of advancing it.
    """
    if micro_batches < 1 or epoch_length < 0 or position < 0:
        raise ValueError(f"need micro_batches ≥ 1, epoch_length ≥ 0 and position ≥ 0, got {micro_batches}, "
                         f"{epoch_length}, {position}")
    if epoch_length == 0:
        return micro_batches
    return min(micro_batches, epoch_length - position % epoch_length)


def accumulate_gradients(micro_step: Callable[[], torch.Tensor], micro_batches: int, loss_divisor: float) -> None:
    """Run ``micro_step`` ``micro_batches`` times, back-propagating each returned loss divided by
    ``loss_divisor`` into the gradients already there (the caller zeroes them per optimiser step)."""
    if micro_batches < 1 or not loss_divisor > 0:
        raise ValueError(f"need micro_batches ≥ 1 and loss_divisor > 0, got {micro_batches}, {loss_divisor}")
    for _ in range(micro_batches):
        (micro_step() / loss_divisor).backward()
