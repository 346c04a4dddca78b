#!/usr/bin/env bash
# The original cnn recipe with Keras's default initialisation (Glorot-uniform kernels, zero biases)
# instead of PyTorch's, to see what the initialisation alone changes.
# Usage: bash bench/init.sh [DATA] [OUT]
set -u
LOG=init.log
source "$(dirname "$0")/common.sh" "$@"
run $PY cli.py fit --model cnn --init keras --data "$DATA" --log-dir "$OUT/keras-init"
