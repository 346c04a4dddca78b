#!/usr/bin/env bash
# The airbench recipes' results for docs/RESULTS.md, one run after another (never two at once: they
# share the CPU and the times would be wrong). Each run writes its own folder (summary.json,
# metrics.csv) as it goes, so a killed sequence keeps what finished.
#   bash bench/airbench_runs.sh OUT_DIR [seeds...]        the Keras recipe, 3 seeds by default
#   EPOCHS=30 bash bench/airbench_runs.sh OUT_DIR 0      the same recipe over another schedule length (keras-e30-seed0;
#                                                      with STAGE=torch, airbench's: torch-e30-seed0.json)
#   STAGE=torch bash bench/airbench_runs.sh OUT_DIR 0    airbench94 itself, plain PyTorch (pytorch_reference/airbench_torch.py)
#   RECIPE=muon bash bench/airbench_runs.sh OUT_DIR      configs/airbench94_muon.yaml (airbench94_muon) instead, and with
#                                                      STAGE=torch airbench94_muon itself (pytorch_reference/airbench_muon_torch.py)
#   RECIPE=airbench95 bash bench/airbench_runs.sh OUT_DIR configs/airbench95.yaml (airbench95: the wider network, 15 epochs;
#                                                      keras-95-seedS), and with STAGE=torch airbench95 itself
#                                                      (pytorch_reference/airbench_torch.py --variant airbench95; torch-95-seedS)
#   STAGE=ablation bash bench/airbench_runs.sh OUT_DIR   3-epoch runs, each trick removed on its own (TTA: every
#                                                      run reports its accuracy with and without it);
#                                                      VARIANTS_ORDER="fp32 random-flip" picks some
set -euo pipefail
OUT=${1:?usage: bash bench/airbench_runs.sh OUT_DIR [seeds...]}
shift
SEEDS=${*:-0 1 2}
DATA=${DATA:-../shared/data/cifar10-jpeg.tar.gz}
PY=${PYTHON:-.venv/bin/python}
case "${RECIPE:-airbench94}" in
airbench94) CONFIG=configs/airbench94.yaml; TAG=""; REFERENCE=pytorch_reference.airbench_torch ;;
muon) CONFIG=configs/airbench94_muon.yaml; TAG="-muon"; REFERENCE=pytorch_reference.airbench_muon_torch ;;
airbench95) CONFIG=configs/airbench95.yaml; TAG="-95"; REFERENCE="pytorch_reference.airbench_torch --variant airbench95" ;;
*) echo "RECIPE must be airbench94, muon or airbench95, not '$RECIPE'" >&2; exit 2 ;;
esac
mkdir -p "$OUT"
case "${STAGE:-keras}" in
keras)
  for seed in $SEEDS; do
    name=keras$TAG${EPOCHS:+-e$EPOCHS}-seed$seed
    # shellcheck disable=SC2086
    $PY cli.py fit --config "$CONFIG" --data "$DATA" --seed "$seed" --log-dir "$OUT/$name" \
      ${EPOCHS:+--epochs $EPOCHS} --target-accuracy 0.94 2>&1 | tee "$OUT/$name.log"
  done ;;
torch)
  for seed in $SEEDS; do
    name=torch$TAG${EPOCHS:+-e$EPOCHS}-seed$seed
    # shellcheck disable=SC2086
    $PY -m $REFERENCE --device cpu --threads 2 --precision bf16 --seed "$seed" --data "$DATA" \
      ${EPOCHS:+--epochs $EPOCHS} --out "$OUT/$name.json" 2>&1 | tee "$OUT/$name.log"
  done ;;
ablation)
  EPOCHS=${EPOCHS:-3}
  declare -A VARIANTS=(
    [recipe]=""
    [no-lookahead]="--lookahead 0"
    [no-bn-bias-lr]="--bn-bias-lr-scale 1"
    [no-label-smoothing]="--label-smoothing 0"
    [random-flip]="--flip random"
    [fp32]="--mixed-precision none"
    [learned-whitening]="--whitening learned"
  )
  ORDER="recipe no-lookahead no-bn-bias-lr no-label-smoothing random-flip learned-whitening fp32"
  for name in ${VARIANTS_ORDER:-$ORDER}; do
    # shellcheck disable=SC2086
    $PY cli.py fit --config configs/airbench94.yaml --data "$DATA" --epochs "$EPOCHS" --log-dir "$OUT/ablation-$name" \
      ${VARIANTS[$name]} 2>&1 | tee "$OUT/ablation-$name.log"
  done ;;
esac
