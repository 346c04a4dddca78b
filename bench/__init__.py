"""Benchmarks and reproduction runs (not installed). The PyTorch side they compare against is
pytorch_reference/; the offline GPU machine's tools are gpu/.

Run the scripts as modules from the checkout: `python -m bench.epochs`, `python -m bench.throughput`.
"""
