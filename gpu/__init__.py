"""Tools for an offline GPU machine (not installed): `bash gpu/gpu_prepare.sh` gathers a bundle on a
machine with internet, `bash gpu/gpu_first.sh` and `gpu/gpu_session.sh` run there from the checkout's
root, `python -m gpu.gpu_check` checks the GPU path. See the README's Benchmarks section."""
