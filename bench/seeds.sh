#!/usr/bin/env bash
# The resnet_lite gap between Keras and PyTorch with the original recipe: PyTorch with another seed,
# to see how far two runs of the same code land apart, and Keras again with seed 0 (the seed of
# bench/reproduce.sh) now that `adam` is keras_cifar.train.optim.TorchAdam (torch.optim.Adam's update).
# (docs/RESULTS.md also lists a run of commit b1ff4e3, Keras's own Adam with torch's epsilon 1e-8.)
# Usage: bash bench/seeds.sh [DATA] [OUT]
set -u
LOG=seeds.log
source "$(dirname "$0")/common.sh" "$@"
run $PY bench/train_reference.py --model resnet_lite --data "$DATA" --epochs 40 --batch-size 32 --lr 1e-3 \
    --seed 1 --out "$OUT/pytorch-seed1/resnet_lite"
run $PY cli.py fit --model resnet_lite --seed 0 --data "$DATA" --log-dir "$OUT/keras-torchadam"
