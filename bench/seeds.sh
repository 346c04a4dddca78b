#!/usr/bin/env bash
# Seed-to-seed spread of resnet_lite with the original recipe, Keras and PyTorch: how far apart two
# runs of the same code land, to judge the gap between the two frameworks.
# Usage: bash bench/seeds.sh [DATA] [OUT]
set -u
DATA=${1:-../shared/data/cifar10-jpeg.tar.gz}
OUT=${2:-logs/results}
PY=${PYTHON:-python}
run() { echo "== $*"; "$@" 2>&1 | tee -a "$OUT/seeds.log" | grep -E "^(Best|Total|final|Error)" ; }
for seed in 1; do
  run $PY cli.py fit --model resnet_lite --seed $seed --data "$DATA" --log-dir "$OUT/keras-seed$seed"
  run $PY bench/train_reference.py --model resnet_lite --data "$DATA" --epochs 40 --batch-size 32 --lr 1e-3 \
      --seed $seed --out "$OUT/pytorch-seed$seed/resnet_lite"
done
