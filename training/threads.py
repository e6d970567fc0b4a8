"""Torch's CPU thread count for training, kept at what is fastest *now* (``--threads``).

docs/benchmarks.md, "Training under contention (``--threads``)": torch starts one worker
thread per core, and a parallel operation waits for its slowest thread. When other programs keep
the cores busy, every operation waits for a scheduler slice, and a step can take several times
longer than on one thread alone. With ``--threads 0`` (auto) the trainer times its steps and now
and then runs one step with the other choice (one thread, or all cores) and keeps whichever was
faster; a probe that loses doubles the wait before the next one (up to ``max_gap`` steps), so on
a quiet machine probing costs well under 1 % of a run. The thread count changes a step's result
only by float rounding (1 vs 2 threads: parameters within 8e-10 after 3 steps).
"""
from __future__ import annotations

import os
import statistics
import time

import torch


def cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


class ThreadGovernor:
    """Pick the faster of ``many`` threads and one thread from timed steps (see module doc).

    ``threads > 0`` fixes the count; ``0`` adapts. :meth:`run` wraps each optimizer step.
    """

    def __init__(self, threads: int = 0, first_gap: int = 5, max_gap: int = 640, window: int = 5,
                 margin: float = 0.9) -> None:
        self.fixed = threads > 0
        self.many = threads if self.fixed else max(1, torch.get_num_threads())
        self.current = self.many
        self.first_gap, self.max_gap, self.window, self.margin = first_gap, max_gap, window, margin
        self.gap = first_gap
        self.next_probe = first_gap
        self.times: dict[int, list[float]] = {}
        self.steps = 0
        self.switches = 0
        torch.set_num_threads(self.current)

    @property
    def adaptive(self) -> bool:
        return not self.fixed and self.many > 1

    def _other(self) -> int:
        return 1 if self.current != 1 else self.many

    def plan(self) -> int:
        """Threads for the next step: the current choice, or the other one on a probe step."""
        if self.adaptive and self.steps >= self.next_probe and len(self.times.get(self.current, ())) >= self.window:
            return self._other()
        return self.current

    def record(self, threads: int, seconds: float) -> None:
        """Book a finished step; switch when the probe beat the recent median by the margin."""
        self.steps += 1
        if threads == self.current:
            recent = self.times.setdefault(threads, [])
            recent.append(seconds)
            del recent[:-self.window]
        else:
            if seconds < self.margin * statistics.median(self.times[self.current]):
                self.current = threads
                self.times[threads] = [seconds]   # older times of this choice are stale
                self.switches += 1
                self.gap = self.first_gap
            else:
                self.gap = min(2 * self.gap, self.max_gap)
            self.next_probe = self.steps + self.gap
        torch.set_num_threads(self.current)

    def run(self, fn):
        """Run one step ``fn()`` with the planned thread count; return its result."""
        threads = self.plan()
        torch.set_num_threads(threads)
        started = time.perf_counter()
        out = fn()
        self.record(threads, time.perf_counter() - started)
        return out
