"""Benchmarks and the soak: run from the repository root as `python -m bench.run` and `python -m bench.soak`."""
