#!/usr/bin/env bash
# Longer runs on a GPU machine without internet, Keras or TensorFlow (its own torch), prepared as
# for gpu/gpu_first.sh: `bash gpu/gpu_prepare.sh` on a machine with internet, the checkout
# copied over with its .gpu_bundle, then from the checkout's root there:
#   bash gpu/gpu_session.sh airbench94   # (or fast) the airbench94 recipe, ~5 min: cli.py fit --config configs/airbench94.yaml
#                                        # (--no-tensorboard) and airbench94 in plain PyTorch (bf16 as
#                                        # the recipe, then its own fp16), seeds 0 1 2 each, real data
#   bash gpu/gpu_session.sh muon         # the same for configs/airbench94_muon.yaml and airbench94_muon, ~5 min
#   bash gpu/gpu_session.sh 95           # the same for configs/airbench95.yaml and airbench95, ~8 min
#   bash gpu/gpu_session.sh check        # python -m gpu.gpu_check, ~5 min
# Everything lands in OUT (default logs/gpu_session-<stage>-<UTC time>): session.log, nvidia-smi.txt,
# runs.tgz (each run's summary.json and metrics.csv, airbench's JSON reports), gpu_check.txt; each
# run writes as it goes, so a run stopped at its timeout keeps what finished. PYTHON, BUNDLE and
# DATA as in gpu/gpu_env.sh; DEVICE (default cuda), SEEDS, RUNS, FIT_ARGS, AIRBENCH_ARGS, CHECK_ARGS.
# A smoke run on a CPU: OUT=/tmp/g DEVICE=cpu SEEDS=0 FIT_ARGS="--epochs 1 --train-images 2048
#   --mixed-precision none" AIRBENCH_ARGS="--epochs 1 --train-images 2048" bash gpu/gpu_session.sh fast
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
OUT=${OUT:-logs/gpu_session-${1:-airbench94}-$(date -u +%Y%m%d-%H%M%S)}
DEVICE=${DEVICE:-cuda}
SEEDS=${SEEDS:-0 1 2}
RUNS=${RUNS:-/tmp/keras-cifar-runs}
# shellcheck source=gpu/gpu_env.sh
source gpu/gpu_env.sh
mkdir -p "$OUT" "$RUNS"

session() {
gpu_env || return 1
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
command -v nvidia-smi > /dev/null && nvidia-smi > "$OUT/nvidia-smi.txt"
"$PY" -c "import torch, keras; print('torch', torch.__version__, 'keras', keras.__version__, 'cuda', torch.cuda.is_available())"

failed=0
case "${1:-airbench94}" in
airbench94|fast|muon|95)
  case "$1" in
  muon) config=configs/airbench94_muon.yaml tag=-muon reference=pytorch_reference.airbench_muon_torch ;;
  95) config=configs/airbench95.yaml tag=-95 reference="pytorch_reference.airbench_torch --variant airbench95" ;;
  *) config=configs/airbench94.yaml tag="" reference=pytorch_reference.airbench_torch ;;
  esac
  for seed in $SEEDS; do
    echo "== cli.py fit --config $config, seed $seed"
    # shellcheck disable=SC2086
    timeout 300 "$PY" cli.py fit --config "$config" --data "$DATA" --data-dir "$RUNS/data" --device "$DEVICE" \
      --seed "$seed" --no-tensorboard --log-dir "$RUNS/keras$tag-seed$seed" --target-accuracy 0.94 ${FIT_ARGS:-} \
      || failed=1
    echo "== $reference, plain PyTorch, bf16 autocast, seed $seed"
    # shellcheck disable=SC2086
    timeout 300 "$PY" -m $reference --device "$DEVICE" --precision bf16 --seed "$seed" --data "$DATA" \
      --data-dir "$RUNS/data" --out "$RUNS/torch$tag-seed$seed.json" ${AIRBENCH_ARGS:-} || failed=1
  done
  if [ "$DEVICE" != cpu ]; then
    echo "== $reference, plain PyTorch, its own fp16, seed 0"
    # shellcheck disable=SC2086
    timeout 300 "$PY" -m $reference --device "$DEVICE" --precision fp16 --seed 0 --data "$DATA" \
      --data-dir "$RUNS/data" --out "$RUNS/fp16/torch$tag-seed0.json" ${AIRBENCH_ARGS:-} || failed=1
  fi
  "$PY" -m bench.airbench_table "$RUNS" || failed=1
  tar czf "$OUT/runs.tgz" -C "$RUNS" --exclude data --exclude '*.keras' . || failed=1 ;;
check)
  # shellcheck disable=SC2086
  timeout 540 "$PY" -m gpu.gpu_check --device "$DEVICE" ${CHECK_ARGS:-} > "$OUT/gpu_check.txt" 2>&1 || failed=1
  cat "$OUT/gpu_check.txt" ;;
*)
  echo "usage: bash gpu/gpu_session.sh airbench94|muon|95|check (fast: airbench94)"; return 2 ;;
esac
return $failed
}

session "$@" 2>&1 | tee -a "$OUT/session.log"
exit "${PIPESTATUS[0]}"
