#!/usr/bin/env bash
# The resnet_lite gap between Keras and PyTorch with the original recipe: Keras again with seed 0
# (same seed as bench/reproduce.sh, Adam's epsilon now torch's 1e-8 instead of Keras's 1e-7), and
# PyTorch with another seed, to see how far two runs of the same code land apart.
# Usage: bash bench/seeds.sh [DATA] [OUT]
set -u
DATA=${1:-../shared/data/cifar10-jpeg.tar.gz}
OUT=${2:-logs/results}
PY=${PYTHON:-python}
mkdir -p "$OUT"
run() { echo "== $*"; "$@" 2>&1 | tee -a "$OUT/seeds.log" | grep -E "^(Best|Total|final|Error)" ; }
run $PY cli.py fit --model resnet_lite --seed 0 --data "$DATA" --log-dir "$OUT/keras-eps1e-8"
run $PY bench/train_reference.py --model resnet_lite --data "$DATA" --epochs 40 --batch-size 32 --lr 1e-3 \
    --seed 1 --out "$OUT/pytorch-seed1/resnet_lite"
