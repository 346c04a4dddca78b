#!/usr/bin/env bash
# Trains the improved configs of the three small models on real CIFAR-10 (CPU), then short
# real-data runs of googlenet and resnet18 at the original settings.
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
# googlenet and resnet18 at the original settings on CPU: 3 epochs of 3,200 images (300 steps of 32),
# evaluated on 1,000 test images. resnet18 starts from random weights here (no internet for the
# ImageNet download); on a GPU machine use configs/resnet18.yaml as it is.
run $PY cli.py fit --model googlenet --epochs 3 --train-images 3200 --eval-images 1000 --data "$DATA" \
    --log-dir "$OUT/keras-short"
run $PY cli.py fit --model resnet18 --weights none --epochs 3 --train-images 3200 --eval-images 1000 \
    --data "$DATA" --log-dir "$OUT/keras-short"
# The original cnn recipe with Keras's default initialisation (Glorot-uniform kernels, zero biases)
# instead of PyTorch's, to see what the initialisation alone changes.
run $PY cli.py fit --model cnn --init keras --data "$DATA" --log-dir "$OUT/keras-init"
