"""Benchmarks, reproduction runs and the PyTorch references they compare against (not installed).

Run the scripts as modules from the checkout: `python -m bench.throughput`, `python -m bench.divergence`.
"""
