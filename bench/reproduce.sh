#!/usr/bin/env bash
# The accuracy runs of docs/RESULTS.md on real CIFAR-10 (CPU), read by `python -m bench.results`.
#   bash bench/reproduce.sh [DATA] [OUT]                each small model with its shipped config through
#                                                       `cli.py fit`, and the original in the plain PyTorch loop
#                                                       (about 2 hours on a 2-core CPU)
#   STAGE=improved bash bench/reproduce.sh [DATA] [OUT] configs/*_improved.yaml
#   STAGE=seeds SEEDS="1 2" MODELS=resnet_lite FRAMEWORKS="keras pytorch" bash bench/reproduce.sh [DATA] [OUT]
#                                                       the original recipe over seeds: OUT/seeds/keras/<model>-<time>,
#                                                       OUT/seeds/pytorch/<model>-seed<S> (two such lanes at a
#                                                       time with OMP_NUM_THREADS=1 each use a 2-core CPU best)
set -u
LOG=${STAGE:-reproduce}.log
source "$(dirname "$0")/common.sh" "$@"
declare -A EPOCHS=([cnn]=20 [resnet_lite]=40 [inception_lite]=20)
declare -A BATCH=([cnn]=32 [resnet_lite]=32 [inception_lite]=16)
pytorch() {  # MODEL SEED OUT
  run $PY -m pytorch_reference.train_reference --model "$1" --data "$DATA" --epochs "${EPOCHS[$1]}" \
      --batch-size "${BATCH[$1]}" --lr 1e-3 --seed "$2" --out "$3"
}
case "${STAGE:-original}" in
original)
  for model in cnn resnet_lite inception_lite; do
    run $PY cli.py fit --model "$model" --data "$DATA" --log-dir "$OUT/keras"
    pytorch "$model" 0 "$OUT/pytorch/$model"
  done ;;
improved)
  for model in cnn resnet_lite inception_lite; do
    run $PY cli.py fit --config "configs/${model}_improved.yaml" --data "$DATA" --log-dir "$OUT/keras-improved"
  done ;;
seeds)
  for model in ${MODELS:-resnet_lite inception_lite}; do
    for seed in ${SEEDS:-1 2}; do
      for framework in ${FRAMEWORKS:-keras pytorch}; do
        if [ "$framework" = keras ]; then
          run $PY cli.py fit --model "$model" --seed "$seed" --data "$DATA" --log-dir "$OUT/seeds/keras"
        else
          pytorch "$model" "$seed" "$OUT/seeds/pytorch/$model-seed$seed"
        fi
      done
    done
  done ;;
*) echo "STAGE must be original, improved or seeds" >&2; exit 2 ;;
esac
