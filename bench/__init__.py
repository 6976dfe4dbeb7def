"""The benchmark suite: ``python -m bench.run`` (``make bench``) writes bench/RESULTS.md and bench/raw/*.json.

Every benchmark is a function returning a dict (see bench/suite.py), so the smoke test in
tests/bench/ can run each one at a tiny size. Servers and load generators run as separate
processes, pinned to different cores with taskset where it exists.
"""
