#!/usr/bin/env bash
# Trains the improved configs of the three small models on real CIFAR-10 (CPU).
# Usage: bash bench/improved.sh [DATA] [OUT]
set -u
LOG=improved.log
source "$(dirname "$0")/common.sh" "$@"
for model in cnn resnet_lite inception_lite; do
  run $PY cli.py fit --config "configs/${model}_improved.yaml" --data "$DATA" --log-dir "$OUT/keras-improved"
done
