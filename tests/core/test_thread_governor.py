"""The trainer's ``--threads 0`` choice between all cores and one thread (training/threads.py)."""
from __future__ import annotations

import torch

from training.threads import ThreadGovernor


def _drive(gov: ThreadGovernor, seconds_for: dict[int, float], steps: int) -> list[int]:
    used = []
    for _ in range(steps):
        threads = gov.plan()
        used.append(threads)
        gov.record(threads, seconds_for[threads])
    return used


def test_one_thread_wins_when_it_is_faster_and_all_cores_come_back_when_they_are():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        gov = ThreadGovernor(0, first_gap=10)
        used = _drive(gov, {2: 1.0, 1: 0.5}, 12)      # another program keeps a core busy
        assert used[:10] == [2] * 10 and used[10] == 1 and gov.current == 1 and gov.switches == 1
        assert torch.get_num_threads() == 1
        used = _drive(gov, {2: 0.4, 1: 0.5}, 30)      # it went away: the probe with 2 threads wins
        assert gov.current == 2 and gov.switches == 2 and 2 in used
    finally:
        torch.set_num_threads(before)


def test_losing_probes_get_rarer_and_a_fixed_count_never_probes():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        gov = ThreadGovernor(0, first_gap=10, max_gap=40)
        used = _drive(gov, {2: 0.5, 1: 1.0}, 200)     # a quiet machine: one thread is slower
        probes = [i for i, t in enumerate(used) if t == 1]
        assert gov.current == 2 and probes[:3] == [10, 31, 72]   # gaps 20, 40, then capped at 40
        assert len(probes) <= 6
        fixed = ThreadGovernor(2)
        assert set(_drive(fixed, {2: 1.0, 1: 0.1}, 50)) == {2}
    finally:
        torch.set_num_threads(before)
