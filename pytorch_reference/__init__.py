"""The PyTorch side of every comparison (not installed; imported by the tests and bench/ from the checkout).

- `originals`: the student's original modules and airbench's networks (airbench94, _muon, 95);
- `torch_loop`: the originals' training loop and `TidyRun`, the tidy plain PyTorch loop the speed
  benchmarks measure against; `train_reference` runs the originals' loop from the command line;
- `airbench_torch`, `airbench_muon_torch`: airbench94/95 and airbench94_muon's own loops;
- `host_syncs`: counts the host synchronisations of a training step.

Run its programs as modules from the checkout: `python -m pytorch_reference.airbench_torch --help`.
"""
