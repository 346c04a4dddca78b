#!/usr/bin/env bash
# Reproduces the original experiments on real CIFAR-10 (CPU): each small model with its
# shipped config through `cli.py fit`, and the same architecture with a plain PyTorch loop.
# Usage: bash bench/reproduce.sh [DATA] [OUT]   (about 2 hours on a 2-core CPU)
set -u
LOG=reproduce.log
source "$(dirname "$0")/common.sh" "$@"
for spec in "cnn 20 32" "resnet_lite 40 32" "inception_lite 20 16"; do
  set -- $spec
  run $PY cli.py fit --model "$1" --data "$DATA" --log-dir "$OUT/keras"
  run $PY -m pytorch_reference.train_reference --model "$1" --data "$DATA" --epochs "$2" --batch-size "$3" --lr 1e-3 \
      --out "$OUT/pytorch/$1"
done
