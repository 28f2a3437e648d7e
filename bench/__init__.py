"""Benchmarks: each script prints its measurements as ratios against a baseline measured in the same run.

Each takes `--smoke`, a run of seconds that tests/integration/test_benches.py runs in CI so no bench rots.
"""
