"""Tools for an offline GPU machine (not installed): `python3 gpu/gpu_bundle.py probe` there says what
it has, `bash gpu/gpu_prepare.sh machine.json` gathers what it lacks on a machine with internet,
`bash gpu/gpu_first.sh RESULTS` (a short batch job) and `gpu/gpu_session.sh` run there from the
checkout's root, `python -m gpu.gpu_check` checks the GPU path. See the README's Benchmarks section."""
