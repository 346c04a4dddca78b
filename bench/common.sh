# Shared by the bench/*.sh result scripts: DATA, OUT and PY from the arguments and environment, and
# `run CMD...`, which appends CMD's output to $OUT/$LOG and prints its progress lines.
DATA=${1:-../shared/data/cifar10-jpeg.tar.gz}
OUT=${2:-logs/results}
PY=${PYTHON:-python}
mkdir -p "$OUT"
run() { echo "== $*"; "$@" 2>&1 | tee -a "$OUT/$LOG" | grep -E "^(Epoch|Best|Total|final|epoch|Error)"; }
