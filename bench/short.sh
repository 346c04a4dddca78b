#!/usr/bin/env bash
# Short real-data runs of googlenet and resnet18 on CPU at the original settings (batch 32, Adam 1e-4
# and SGD 1e-3): the loss falls and accuracy leaves chance. Full runs need a GPU (docs/RESULTS.md).
# Usage: bash bench/short.sh [DATA] [OUT]
set -u
LOG=short.log
source "$(dirname "$0")/common.sh" "$@"
# googlenet and resnet18 at the original settings on CPU: 2 (googlenet) or 3 (resnet18) epochs of 3,200
# images (200 or 300 steps of 32),
# evaluated on 1,000 test images. resnet18 starts from random weights here (no internet for the
# ImageNet download); on a GPU machine use configs/resnet18.yaml as it is.
run $PY cli.py fit --model googlenet --epochs 2 --train-images 3200 --eval-images 1000 --data "$DATA" \
    --log-dir "$OUT/keras-short"
run $PY cli.py fit --model resnet18 --weights none --epochs 3 --train-images 3200 --eval-images 1000 \
    --data "$DATA" --log-dir "$OUT/keras-short"
