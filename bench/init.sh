#!/usr/bin/env bash
# The original cnn recipe with Keras's default initialisation (Glorot-uniform kernels, zero biases)
# instead of PyTorch's, to see what the initialisation alone changes.
# Usage: bash bench/init.sh [DATA] [OUT]
set -u
DATA=${1:-../shared/data/cifar10-jpeg.tar.gz}
OUT=${2:-logs/results}
PY=${PYTHON:-python}
mkdir -p "$OUT"
run() { echo "== $*"; "$@" 2>&1 | tee -a "$OUT/init.log" | grep -E "^(Best|Total|Error)" ; }
run $PY cli.py fit --model cnn --init keras --data "$DATA" --log-dir "$OUT/keras-init"
