#!/usr/bin/env bash
# The test suite on the newest or the oldest stack keras-cifar declares; docs/TESTING.md keeps the
# support matrix of what passed where. Not part of .ci/run: it installs a whole stack (torch alone
# is 3 GB with its CUDA libraries) and runs the whole suite.
#
#   bash .ci/compat.sh newest   # the newest torch, tensorflow-cpu, onnx... on the index, and the next
#                               # Keras (keras-nightly, the Keras 3.16 line) in place of keras
#   bash .ci/compat.sh oldest   # the floors of pyproject.toml: torch 2.9.1, keras 3.15.1, tensorflow-cpu 2.20
#
# PYTHON: the interpreter (default python3; e.g. PYTHON=python3.13). VENV: the virtual environment
# (default .venv-compat-newest or -oldest, made afresh). Any local pip constraint (PIP_CONSTRAINT,
# or one in pip.conf) is ignored. Prints what it installed, then runs the README's test command;
# its exit status is pytest's.
set -euo pipefail
cd "$(dirname "$0")/.."
which=${1:-}
case $which in
newest | oldest) ;;
*) echo "usage: bash .ci/compat.sh newest|oldest (see its header)" >&2; exit 2 ;;
esac
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv-compat-$which}
export PIP_CONSTRAINT=/dev/null PIP_DISABLE_PIP_VERSION_CHECK=1
rm -rf "$VENV"
"$PYTHON" -m venv "$VENV"
pip=("$VENV/bin/python" -m pip install --quiet)
if [ "$which" = newest ]; then
  "${pip[@]}" --upgrade torch
  "${pip[@]}" -e '.[dev,export]'
  "${pip[@]}" --upgrade --upgrade-strategy eager tensorflow-cpu onnx onnxscript onnxruntime numpy
  # keras-nightly installs the module `keras` under another name: take keras out first (tensorflow-cpu
  # pulls it in), and add the nightly without its dependencies (the same as keras's).
  "$VENV/bin/python" -m pip uninstall --quiet -y keras
  "${pip[@]}" --pre --no-deps --upgrade keras-nightly
else
  "${pip[@]}" "torch==2.9.1" "keras==3.15.1" "tensorflow-cpu==2.20.*" "tensorboard==2.20.*" "onnx==1.18.*" \
    "onnxscript==0.6.1" "onnxruntime==1.22.*"
  "${pip[@]}" -e '.[dev,export]'
  # tensorflow-cpu pulled keras back to its own pin: the floor again, without touching the rest
  "${pip[@]}" --no-deps "keras==3.15.1"
fi
bash .ci/torchvision.sh "$VENV/bin/python"
echo "== $which stack, $(date -u '+%Y-%m-%d %H:%M UTC'), $("$VENV/bin/python" -c 'import platform; print("Python", platform.python_version(), platform.machine())')"
"$VENV/bin/python" - <<'PY'
from importlib import metadata
for name in ("torch", "torchvision", "keras", "keras-nightly", "tensorflow-cpu", "tensorflow-datasets", "tensorboard",
             "numpy", "onnx", "onnxscript", "onnxruntime", "opencv-python-headless"):
    try:
        print(f"  {name} {metadata.version(name)}")
    except metadata.PackageNotFoundError:
        pass
PY
"$VENV/bin/python" -m pytest -q
