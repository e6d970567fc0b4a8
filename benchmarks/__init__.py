"""Performance benchmarks of the PSA node pack: ``python -m benchmarks`` (see ``docs/benchmarks.md``).

Every figure is a ratio of two things measured side by side in one process (paired repeats
after warm-up; median and quartiles of the per-pair ratios), so it holds on a noisy machine.
"""
