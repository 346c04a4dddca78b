#!/usr/bin/env bash
# Trains the improved configs of the three small models on real CIFAR-10 (CPU).
# Usage: bash bench/improved.sh [DATA] [OUT]
set -u
DATA=${1:-../shared/data/cifar10-jpeg.tar.gz}
OUT=${2:-logs/results}
PY=${PYTHON:-python}
mkdir -p "$OUT"
run() { echo "== $*"; "$@" 2>&1 | tee -a "$OUT/improved.log" | grep -E "^(Epoch|Best|Total|Error)" ; }
for model in cnn resnet_lite inception_lite; do
  run $PY cli.py fit --config "configs/${model}_improved.yaml" --data "$DATA" --log-dir "$OUT/keras-improved"
done
