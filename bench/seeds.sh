#!/usr/bin/env bash
# Seed sweep of the original recipe, Keras port against the plain PyTorch loop, to measure how far
# runs of the same code land apart and whether the Keras-PyTorch gap is larger than that.
# Runs go to OUT/seeds/keras/<model>-<time> (seed in its config.yaml) and OUT/seeds/pytorch/<model>-seed<S>.
# Usage: SEEDS="1 2" MODELS="resnet_lite" FRAMEWORKS="keras pytorch" bash bench/seeds.sh [DATA] [OUT]
# Two lanes in parallel, each with OMP_NUM_THREADS=1, use a 2-core CPU better than one lane with two threads.
# PyTorch's seed 0 is bench/reproduce.sh's run; reproduce.sh's Keras runs predate TorchAdam, so Keras
# seed 0 is run here again. docs/RESULTS.md gives the exact invocations behind its tables.
set -u
LOG=seeds.log
source "$(dirname "$0")/common.sh" "$@"
declare -A EPOCHS=([cnn]=20 [resnet_lite]=40 [inception_lite]=20)
declare -A BATCH=([cnn]=32 [resnet_lite]=32 [inception_lite]=16)
for model in ${MODELS:-resnet_lite inception_lite}; do
  for seed in ${SEEDS:-1 2}; do
    for framework in ${FRAMEWORKS:-keras pytorch}; do
      if [ "$framework" = keras ]; then
        run $PY cli.py fit --model "$model" --seed "$seed" --data "$DATA" --log-dir "$OUT/seeds/keras"
      else
        run $PY -m pytorch_reference.train_reference --model "$model" --data "$DATA" --epochs "${EPOCHS[$model]}" \
            --batch-size "${BATCH[$model]}" --lr 1e-3 --seed "$seed" --out "$OUT/seeds/pytorch/$model-seed$seed"
      fi
    done
  done
done
