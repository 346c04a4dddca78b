#!/usr/bin/env bash
# The first look at a GPU machine, about 7 minutes: does keras-cifar run there, correctly, and how
# fast? For a fresh machine with Python and the torch built for its CUDA, without internet, Keras
# or TensorFlow: first `bash gpu/gpu_prepare.sh` on a machine with internet, copy the checkout
# (its .gpu_bundle included) over, then from the checkout's root:
#   bash gpu/gpu_first.sh [OUT]        (default logs/gpu_first-<UTC time>)
# Each step runs under its own timeout, its output in OUT/<step>.log, and its result is appended
# to OUT/results.md as soon as it exists (a step that fails or times out leaves its last lines):
#   env, env-python    the machine: nvidia-smi, Python, torch, CUDA, cuDNN, the GPUs, Keras
#   fit-*, evaluate-*  cli.py fit --model resnet_lite --epochs 2 on 10,000 training images
#                      (--no-tensorboard) in fp32 (--mixed-precision none), bf16 and fp16, each
#                      then cli.py evaluate of its best checkpoint on the test set
#   gpu_check          python -m gpu.gpu_check: cnn, resnet18 and googlenet in fp32 and bf16
#   fast-*             configs/airbench94.yaml, seed 0, beside airbench94's own loop (pytorch_reference.airbench_torch)
#   googlenet-*        2 epochs of googlenet on 4,096 images with each JIT setting (JITS below)
# It exits with status 1 when a step failed. DEVICE=cpu shrinks every step to run on a CPU in a
# few minutes (the test suite runs it); PYTHON, BUNDLE and DATA as in gpu/gpu_env.sh.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
DEVICE=${DEVICE:-cuda}
OUT=${1:-logs/gpu_first-$(date -u +%Y%m%d-%H%M%S)}
# shellcheck source=gpu/gpu_env.sh
source gpu/gpu_env.sh
RUNS=$OUT/runs
RESULTS=$OUT/results.md
# googlenet's rows, one per --jit setting: the captured graph with TorchScript's fuser allowed on
# CUDA, the captured graph with it off (the default), and eager Keras.
JITS="trace-fused trace off"

if [ "$DEVICE" = cpu ]; then  # one of each kind of step, each a few steps long
  PRECISIONS=none
  FIT=(--epochs 2 --train-images 32 --eval-images 32)
  CHECK=(--models cnn --precisions none --steps 5)
  FAST=(--epochs 1 --train-images 64 --eval-images 50 --batch-size 32 --eval-batch-size 50 --mixed-precision none)
  AIRBENCH=(--precision fp32 --epochs 1 --train-images 64 --test-images 50 --batch-size 32)
  GOOGLENET=(--epochs 1 --train-images 8 --eval-images 8 --batch-size 8 --resize-to 32)
else
  PRECISIONS="none bf16 fp16"
  FIT=(--epochs 2 --train-images 10000)
  CHECK=(--models "cnn,resnet18,googlenet" --precisions "none,bf16")
  FAST=(--seed 0)
  AIRBENCH=(--precision bf16)
  GOOGLENET=(--epochs 2 --train-images 4096 --eval-images 1024)
fi

mkdir -p "$RUNS"
failed=0
[ -n "$DATA" ] || { echo "No data: run gpu/gpu_prepare.sh (it copies the data into $BUNDLE), or set DATA."; exit 1; }

# step NAME SECONDS COMMAND...: COMMAND's output into OUT/NAME.log, its outcome into results.md.
step() {
  local name=$1 limit=$2 start=$SECONDS rc=0 outcome
  shift 2
  echo "== $name: $*"
  timeout --kill-after=10 "$limit" "$@" > "$OUT/$name.log" 2>&1 || rc=$?
  case $rc in
  0) outcome=ok ;;
  124 | 137) outcome="timed out after $limit s" ;;
  *) outcome="failed (exit $rc)" ;;
  esac
  printf '\n### %s: %s, %d s\n\n%s\n\n' "$name" "$outcome" $((SECONDS - start)) "\`$*\`" | tee -a "$RESULTS"
  if [ $rc != 0 ]; then
    failed=1
    tail -n 20 "$OUT/$name.log" | sed 's/^/    /' | tee -a "$RESULTS"
  fi
  return $rc
}

record() { "$@" 2>&1 | tee -a "$RESULTS"; }

printf '# First look, %s, %s\n' "$(hostname)" "$(date -u '+%Y-%m-%d %H:%M UTC')" > "$RESULTS"
gpu_env > "$OUT/install.log" 2>&1 || { tee -a "$RESULTS" < "$OUT/install.log"; exit 1; }
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1

if command -v nvidia-smi > /dev/null; then
  step env 60 nvidia-smi && record nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
fi
step env-python 60 "$PY" -m gpu.first_look env && cat "$OUT/env-python.log" >> "$RESULTS"

for precision in $PRECISIONS; do
  label=${precision/none/fp32}
  log_dir=$RUNS/resnet_lite-$label
  step "fit-$label" 150 "$PY" cli.py fit --model resnet_lite "${FIT[@]}" --mixed-precision "$precision" \
    --device "$DEVICE" --data "$DATA" --data-dir "$OUT/data" --no-tensorboard --log-dir "$log_dir" || continue
  record "$PY" -m gpu.first_look run "resnet_lite, $label" "$log_dir"
  step "evaluate-$label" 90 "$PY" cli.py evaluate --log-dir "$log_dir" --device "$DEVICE" --data-dir "$OUT/data" \
    && grep -h "^Accuracy" "$OUT/evaluate-$label.log" | tee -a "$RESULTS"
done

step gpu_check 300 "$PY" -m gpu.gpu_check --device "$DEVICE" "${CHECK[@]}"
grep -h "^|" "$OUT/gpu_check.log" | tee -a "$RESULTS"

step fast-keras 180 "$PY" cli.py fit --config configs/airbench94.yaml "${FAST[@]}" --device "$DEVICE" --data "$DATA" \
  --data-dir "$OUT/data" --no-tensorboard --log-dir "$RUNS/fast/keras-seed0"
step fast-airbench94 150 "$PY" -m pytorch_reference.airbench_torch --device "$DEVICE" "${AIRBENCH[@]}" --seed 0 --data "$DATA" \
  --data-dir "$OUT/data" --out "$RUNS/fast/torch-seed0.json"
record "$PY" -m bench.airbench_table "$RUNS/fast"

for jit in $JITS; do
  log_dir=$RUNS/googlenet-$jit
  step "googlenet-$jit" 150 "$PY" cli.py fit --model googlenet "${GOOGLENET[@]}" --jit "$jit" --device "$DEVICE" \
    --data "$DATA" --data-dir "$OUT/data" --no-tensorboard --log-dir "$log_dir" \
    && record "$PY" -m gpu.first_look run "googlenet, --jit $jit" "$log_dir"
done
echo "Results: $RESULTS"
exit $failed
