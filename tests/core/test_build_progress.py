"""The toy world's whole-build progress bar (toy_world/progress.py; docs/toy-world.md, "Cost")."""
from __future__ import annotations

from toy_world.progress import BuildProgress, Estimate, describe


def test_the_bar_counts_estimated_seconds_over_all_stages():
    est = Estimate(base_step_s=0.01, dpo_step_s=0.1, process_s=5.0,
                   stages={"base UNet": 10.0, "users and pairs": 2.0, "train_psa": 28.0})
    assert est.total_s == 40.0
    lines = []
    bar = BuildProgress(est, lines.append)
    assert bar.bar.total == 40.0
    bar.stage("base UNet")
    bar.fraction(0.5)
    assert bar.done == 5.0
    bar.stage("users and pairs")          # the previous stage counts in full
    assert bar.done == 10.0
    bar.stage("train_psa")
    bar.fraction(0.25)
    assert bar.done == 12.0 + 7.0
    bar.fraction(0.1)                     # never goes back
    assert bar.done == 19.0
    bar.fraction(3.0)                     # a stage never counts more than its estimate
    assert bar.done == 40.0
    bar.close()
    assert bar.bar.n == 40.0


def test_durations_read_as_minutes_and_seconds():
    assert describe(42.4) == "42 s"
    assert describe(125) == "2 min 05 s"
