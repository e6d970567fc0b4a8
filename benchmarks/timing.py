"""Paired timing: ratios of things measured side by side, summarised by median and quartiles.

A pair is one run of each variant, back to back, in an order that rotates from pair to pair
(so neither variant always runs first); machine drift slower than a pair cancels in the ratio.
"""
from __future__ import annotations

import statistics
import time
from typing import Callable


def quartiles(values: list[float]) -> tuple[float, float, float]:
    """(q1, median, q3) of ``values`` (inclusive method; a single value is its own quartiles)."""
    if len(values) == 1:
        return values[0], values[0], values[0]
    q1, med, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q1, med, q3


def ratio_summary(times: dict[str, list[float]], baseline: str, digits: int = 3) -> dict[str, dict]:
    """Per variant: median seconds and the median/quartiles of ``t_variant / t_baseline`` per pair."""
    out = {}
    for name, values in times.items():
        ratios = [a / b for a, b in zip(values, times[baseline])]
        q1, med, q3 = quartiles(ratios)
        out[name] = {"median_s": round(statistics.median(values), 4), "ratio": round(med, digits),
                     "ratio_q1": round(q1, digits), "ratio_q3": round(q3, digits), "pairs": len(ratios)}
    return out


def paired_runs(variants: dict[str, Callable[[], object]], repeats: int, warmup: int = 1) -> dict[str, list[float]]:
    """Wall time of each variant, ``warmup`` untimed rounds then ``repeats`` timed, rotating order."""
    names = list(variants)
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(warmup + repeats):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            started = time.perf_counter()
            variants[name]()
            elapsed = time.perf_counter() - started
            if r >= warmup:
                times[name].append(elapsed)
    return times
