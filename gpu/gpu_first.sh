#!/usr/bin/env bash
# The first look at a GPU machine, as one short batch job: does keras-cifar run there, correctly,
# and how fast? For a machine with Python and the torch built for its CUDA, without internet:
# first `bash gpu/gpu_prepare.sh` on a machine with internet, copy the checkout (its .gpu_bundle
# included) over, then from the checkout's root:
#   bash gpu/gpu_first.sh [RESULTS]      (default logs/gpu_first-<UTC time>)
# RESULTS (a new or empty folder) receives two files, small enough to be returned as they are:
#   results.md    each step's outcome and figures, appended as each step ends
#   logs.tar.gz   each step's full output, and each run's summary.json, metrics.csv, config and
#                 reports (no checkpoints); packed again after every step, logs cut to their last
#                 lines when the archive would pass the size limit
# Runs, checkpoints and the data's array cache (about 180 MB) go to a work folder elsewhere, removed
# at the end. The steps, each in the time left of the deadline, at most its own budget (seconds):
#   install (180)         the bundle's missing packages into a virtual environment (gpu/gpu_env.sh)
#   env, env-python (60)  nvidia-smi; Python, torch, CUDA, cuDNN, the GPUs, Keras
#   fit-*, evaluate-*     cli.py fit --model resnet_lite --epochs 2 on 10,000 training images
#     (150, 90)           (--no-tensorboard) in fp32 (--mixed-precision none), bf16 and fp16, each
#                         then cli.py evaluate of its best checkpoint on the test set
#   gpu_check (240)       python -m gpu.gpu_check: cnn, resnet18 and googlenet in fp32 and bf16
#   fast-* (180, 150)     configs/airbench94.yaml, seed 0, beside airbench94's own loop
#   googlenet-* (240, 150) 2 epochs of googlenet on 4,096 images with each JIT setting; the compiled
#                         one first and longer (torch.compile's first compilation on a new machine:
#                         on a CPU with torch 2.9.1 it took over 150 s where a warm cache takes 48 s)
# A step that would get less than MIN_STEP seconds is not started: results.md records it as
# skipped. It exits with status 1 when a step failed or RESULTS breaks its limits.
# Settings (environment variables):
#   DEADLINE       seconds for the whole job, packing included (default 540: 9 minutes)
#   MAX_FILES      files RESULTS may hold (default 8; it needs 2)
#   MAX_FILE_SIZE  bytes per file, K or M allowed (default 16M)
#   WORK           where the work folder is made (default TMPDIR, else /tmp); KEEP_WORK=1 keeps it
#   MIN_STEP       default 10
#   DEVICE=cpu     shrinks every step to run on a CPU in a few minutes (the test suite runs it)
#   PYTHON, BUNDLE and DATA as in gpu/gpu_env.sh
set -uo pipefail
if [ "${1:-}" = -h ] || [ "${1:-}" = --help ]; then
  sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'
  exit 0
fi
fail() { echo "gpu_first.sh: $*" >&2; exit 2; }
[ $# -le 1 ] || fail "one argument at most, the results folder (--help says more)"
RESULTS=$(realpath -m "${1:-$(dirname "$0")/../logs/gpu_first-$(date -u +%Y%m%d-%H%M%S)}")
cd "$(dirname "$0")/.." || exit 2
DEVICE=${DEVICE:-cuda}
DEADLINE=${DEADLINE:-540}
MAX_FILES=${MAX_FILES:-8}
MAX_FILE_SIZE=${MAX_FILE_SIZE:-16M}
MIN_STEP=${MIN_STEP:-10}
for setting in DEADLINE MAX_FILES MIN_STEP; do
  [[ ${!setting} =~ ^[0-9]+$ ]] || fail "$setting must be a whole number of seconds or files. Received: $setting=${!setting}"
done
MAX_BYTES=$(numfmt --from=iec "$MAX_FILE_SIZE" 2> /dev/null) \
  || fail "MAX_FILE_SIZE must be bytes, or a number with K or M. Received: MAX_FILE_SIZE=$MAX_FILE_SIZE"
((MAX_FILES >= 2)) || fail "MAX_FILES must be at least 2 (results.md and logs.tar.gz). Received: MAX_FILES=$MAX_FILES"
((MAX_BYTES >= 4096)) || fail "MAX_FILE_SIZE must be at least 4K. Received: MAX_FILE_SIZE=$MAX_FILE_SIZE"
if [ -e "$RESULTS" ] && [ -n "$(ls -A "$RESULTS" 2> /dev/null)" ]; then
  fail "the results folder $RESULTS is not empty: name a new or empty one"
fi
mkdir -p "$RESULTS" || fail "cannot make the results folder $RESULTS"
WORK=$(mktemp -d "$(realpath -m "${WORK:-${TMPDIR:-/tmp}}")/keras-cifar-gpu-first.XXXXXX") \
  || fail "cannot make a work folder in WORK=${WORK:-${TMPDIR:-/tmp}}"
case "$WORK/" in "$RESULTS"/*) rm -rf "$WORK"; fail "WORK must lie outside the results folder $RESULTS" ;; esac
END=$((SECONDS + DEADLINE))
RESERVE=10 # seconds kept for the last packing
LOGS=$WORK/logs
RUNS=$WORK/runs
REPORT=$RESULTS/results.md
ARCHIVE=$RESULTS/logs.tar.gz
mkdir -p "$LOGS" "$RUNS"
# shellcheck source=gpu/gpu_env.sh
source gpu/gpu_env.sh
# googlenet's rows, one per --jit setting: the captured graph compiled by torch.compile, the
# captured graph op by op (the default), and eager Keras.
JITS="graph-compiled graph off"

if [ "$DEVICE" = cpu ]; then # one of each kind of step, each a few steps long
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

# pack: the logs and the runs' small files into logs.tar.gz; past MAX_BYTES, the logs alone, each
# cut to its last bytes (halving) until the archive fits.
pack() {
  local keep=$MAX_BYTES runs=("-C" "$WORK" "-T" "$WORK/files.txt") log size
  (cd "$WORK" && find runs -type f \( -name '*.json' -o -name '*.csv' -o -name '*.yaml' \) > files.txt)
  while :; do
    rm -rf "$WORK/cut" && mkdir -p "$WORK/cut/logs"
    for log in "$LOGS"/*.log; do
      [ -e "$log" ] || continue
      size=$(stat -c %s "$log")
      if ((size > keep)); then
        { echo "[... the first $((size - keep)) bytes cut: logs.tar.gz must stay under $MAX_FILE_SIZE]"
          tail -c "$keep" "$log"; } > "$WORK/cut/logs/${log##*/}"
      else
        cp "$log" "$WORK/cut/logs/"
      fi
    done
    tar -czf "$ARCHIVE.part" -C "$WORK/cut" logs "${runs[@]}"
    (($(stat -c %s "$ARCHIVE.part") > MAX_BYTES && keep >= 64)) || break
    if ((${#runs[@]})); then runs=(); else keep=$((keep / 2)); fi
  done
  mv -f "$ARCHIVE.part" "$ARCHIVE"
}

finish() {
  local status=$?
  trap - EXIT
  pack
  # Past the size limit, results.md keeps its beginning and, whole, every step's outcome line.
  if (($(stat -c %s "$REPORT") > MAX_BYTES - 200)); then
    grep -E '^(### |No steps failed|Some steps failed)' "$REPORT" | cut -c 1-200 > "$WORK/outcomes"
    head -c $((MAX_BYTES - 400 - $(stat -c %s "$WORK/outcomes"))) "$REPORT" > "$WORK/report"
    printf '\n\n[results.md cut here: it must stay under %s. Every step'"'"'s outcome:]\n\n' "$MAX_FILE_SIZE" \
      >> "$WORK/report"
    cat "$WORK/outcomes" >> "$WORK/report" && mv "$WORK/report" "$REPORT"
  fi
  local files largest
  files=$(find "$RESULTS" -type f | wc -l)
  largest=$(find "$RESULTS" -type f -printf '%s\n' | sort -n | tail -n 1)
  if ((files > MAX_FILES || largest > MAX_BYTES)); then
    echo "The results folder breaks its limits: $files files, the largest $largest bytes (at most $MAX_FILES of $MAX_BYTES)." >&2
    status=1
  fi
  if [ "${KEEP_WORK:-0}" = 1 ]; then echo "Work folder kept: $WORK"; else rm -rf "$WORK"; fi
  echo "Results: $RESULTS ($files files, the largest $largest bytes), after $SECONDS s"
  exit "$status"
}
failed=0 skipped=0
# step NAME BUDGET COMMAND...: COMMAND under min(BUDGET, the time left) seconds, its output in
# NAME.log, its outcome appended to results.md; not started when less than MIN_STEP s are left.
step() {
  local name=$1 budget=$2 start=$SECONDS rc=0 outcome limit
  shift 2
  limit=$((END - RESERVE - SECONDS))
  ((limit < budget)) || limit=$budget
  if ((limit < MIN_STEP)); then
    skipped=$((skipped + 1))
    printf '\n### %s: skipped, %d s of the deadline left (%d kept for the packing)\n' "$name" $((END - SECONDS)) \
      "$RESERVE" | tee -a "$REPORT"
    return 3
  fi
  echo "== $name: $*"
  timeout --kill-after=5 "$limit" "$@" > "$LOGS/$name.log" 2>&1 || rc=$?
  case $rc in
  0) outcome=ok ;;
  124 | 137) outcome="timed out after $limit s" ;;
  *) outcome="failed (exit $rc)" ;;
  esac
  printf '\n### %s: %s, %d s\n\n%s\n\n' "$name" "$outcome" $((SECONDS - start)) "\`${*//$WORK/\$WORK}\`" | tee -a "$REPORT"
  if [ $rc != 0 ]; then
    failed=1
    tail -n 20 "$LOGS/$name.log" | cut -c 1-300 | sed 's/^/    /' | tee -a "$REPORT"
  fi
  pack
  return $rc
}

# record COMMAND...: its output (the first 100 lines) into results.md, its errors into record.log,
# within 30 s and the deadline.
record() {
  local limit=$((END - RESERVE - SECONDS))
  ((limit < 30)) || limit=30
  ((limit >= 1)) || return 0
  timeout --kill-after=5 "$limit" "$@" 2>> "$LOGS/record.log" | head -n 100 | cut -c 1-1000 | tee -a "$REPORT"
}

printf '# First look, %s, %s\n\nDeadline %d s; results folder at most %d files of %s; work folder %s\n' \
  "$(hostname)" "$(date -u '+%Y-%m-%d %H:%M UTC')" "$DEADLINE" "$MAX_FILES" "$MAX_FILE_SIZE" "$WORK" > "$REPORT"
trap finish EXIT
trap 'exit 143' TERM INT
[ -n "$DATA" ] || { echo "No data: run gpu/gpu_prepare.sh (it copies the data into $BUNDLE), or set DATA." | tee -a "$REPORT"; exit 1; }
export BUNDLE PYTHON="$PY"
step install 180 bash -c 'source gpu/gpu_env.sh && gpu_env && echo "PY=$PY"' || exit 1  # PY: its Python
PY=$(sed -n 's/^PY=//p' "$LOGS/install.log" | tail -n 1)
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1

if command -v nvidia-smi > /dev/null; then
  step env 60 nvidia-smi && record nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
fi
step env-python 60 "$PY" -m gpu.first_look env && grep "^- " "$LOGS/env-python.log" | head -n 20 >> "$REPORT"

for precision in $PRECISIONS; do
  label=${precision/none/fp32}
  log_dir=$RUNS/resnet_lite-$label
  step "fit-$label" 150 "$PY" -m gpu.first_look fit "$log_dir.times.json" fit --model resnet_lite "${FIT[@]}" \
    --mixed-precision "$precision" --device "$DEVICE" --data "$DATA" --data-dir "$WORK/data" --no-tensorboard \
    --log-dir "$log_dir" || continue
  record "$PY" -m gpu.first_look run "resnet_lite, $label" "$log_dir" "$log_dir.times.json"
  step "evaluate-$label" 90 "$PY" cli.py evaluate --log-dir "$log_dir" --device "$DEVICE" --data-dir "$WORK/data" \
    && grep -h "^Accuracy" "$LOGS/evaluate-$label.log" | tee -a "$REPORT"
done

step gpu_check 240 "$PY" -m gpu.gpu_check --device "$DEVICE" "${CHECK[@]}"
[ -f "$LOGS/gpu_check.log" ] && grep -h "^|" "$LOGS/gpu_check.log" | head -n 50 | tee -a "$REPORT"

step fast-keras 180 "$PY" cli.py fit --config configs/airbench94.yaml "${FAST[@]}" --device "$DEVICE" --data "$DATA" \
  --data-dir "$WORK/data" --no-tensorboard --log-dir "$RUNS/fast/keras-seed0"
step fast-airbench94 150 "$PY" -m pytorch_reference.airbench_torch --device "$DEVICE" "${AIRBENCH[@]}" --seed 0 \
  --data "$DATA" --data-dir "$WORK/data" --out "$RUNS/fast/torch-seed0.json"
[ -d "$RUNS/fast" ] && record "$PY" -m bench.airbench_table "$RUNS/fast"

for jit in $JITS; do
  log_dir=$RUNS/googlenet-$jit
  budget=150
  [ "$jit" = graph-compiled ] && budget=240
  step "googlenet-$jit" $budget "$PY" -m gpu.first_look fit "$log_dir.times.json" fit --model googlenet "${GOOGLENET[@]}" \
    --jit "$jit" --device "$DEVICE" --data "$DATA" --data-dir "$WORK/data" --no-tensorboard --log-dir "$log_dir" \
    && record "$PY" -m gpu.first_look run "googlenet, --jit $jit" "$log_dir" "$log_dir.times.json"
done
printf '\n%s steps failed, %d skipped for the deadline.\n' "$([ $failed = 0 ] && echo No || echo Some)" "$skipped" \
  | tee -a "$REPORT"
exit $failed
