"""The order in which training pairs are drawn: one shuffled stream, or epochs as the reference's
data loader makes them (``docs/reference-parity.md``, "Gradient accumulation as the reference
runs it").

Stream (the pack's default): a shuffled permutation of the pairs is read in order, a global batch
may straddle two permutations, and a new permutation is drawn when one is used up.

Epochs (``--epoch-end-step``): like a PyTorch ``DataLoader`` with ``shuffle=True`` and
``drop_last=True`` sharded over the processes, as the reference's is. An epoch is
``floor(pairs / global batch)`` micro-batches of one permutation; the pairs left over are not
seen that epoch; the next epoch draws a new permutation. The trainer asks
:attr:`PairOrder.epoch_length` and :attr:`PairOrder.position` where the epoch ends
(:func:`training.accumulation.step_micro_batches`).

No ComfyUI import: this module is tested in the ``core`` tier.
"""
from __future__ import annotations

import torch

from .data import DataValidationError


class PairOrder:
    """Indices of the pairs each micro-batch draws; ``order`` and ``cursor`` are its whole state
    (checkpointed, so a resumed run draws the same pairs)."""

    def __init__(self, pairs: int, global_batch: int, epochs: bool) -> None:
        if pairs < 1 or global_batch < 1:
            raise ValueError(f"need pairs ≥ 1 and global_batch ≥ 1, got {pairs}, {global_batch}")
        self.pairs = pairs
        self.global_batch = global_batch
        self.epoch_length = pairs // global_batch if epochs else 0
        if epochs and self.epoch_length == 0:
            raise DataValidationError(
                f"--epoch-end-step: the training data has {pairs} pairs, fewer than one global batch of "
                f"{global_batch} (batch size × processes), so an epoch would be empty; lower --batch-size, "
                "add data or leave --epoch-end-step off")
        self.order: list[int] = []
        self.cursor = 0

    @property
    def position(self) -> int:
        """Micro-batches already drawn in the current epoch (0 at its start; always 0 without epochs)."""
        if not self.epoch_length:
            return 0
        return (self.cursor // self.global_batch) % self.epoch_length

    def next_batch(self, gen: torch.Generator) -> list[int]:
        """The next global batch of pair indices; new permutations are drawn from ``gen``."""
        if self.epoch_length:
            if not self.order or self.cursor >= self.epoch_length * self.global_batch:
                self._shuffle(gen)
            batch = self.order[self.cursor:self.cursor + self.global_batch]
            self.cursor += self.global_batch
            return batch
        batch = []
        while len(batch) < self.global_batch:
            if self.cursor >= len(self.order):
                self._shuffle(gen)
            batch.append(self.order[self.cursor])
            self.cursor += 1
        return batch

    def _shuffle(self, gen: torch.Generator) -> None:
        self.order = torch.randperm(self.pairs, generator=gen).tolist()
        self.cursor = 0
