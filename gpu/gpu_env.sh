# shellcheck shell=bash
# Sourced by gpu/gpu_first.sh and gpu/gpu_session.sh on the GPU machine, from the checkout's
# root: sets PY to a Python that runs this checkout, and DATA to the bundle's data unless set.
# The machine's own Python (PYTHON, else python3) when it already imports keras-cifar's
# dependencies; else a virtual environment in the bundle that sees the machine's packages (its
# torch above all) and gets only what is missing, from the bundle's wheels, without a network.
# The bundle is what `bash gpu/gpu_prepare.sh` wrote (BUNDLE, default .gpu_bundle).
BUNDLE=${BUNDLE:-.gpu_bundle}
PY=${PYTHON:-python3}
export KERAS_BACKEND=torch  # Keras's default backend is TensorFlow's
if [ -z "${DATA:-}" ]; then
  DATA=$(find "$BUNDLE/data" -mindepth 1 -maxdepth 1 2>/dev/null | head -n 1)
fi

gpu_env() {
  if ! "$PY" -c "import torch" 2> /dev/null; then
    echo "$PY cannot import torch: install the torch built for this machine's CUDA first (keras-cifar" \
      "never installs torch here), or name the Python that has it: PYTHON=/path/to/python."
    return 1
  fi
  local needs="import keras, click, yaml, numpy, cv2"
  "$PY" -c "$needs" 2> /dev/null && return 0
  local venv wheel pip
  venv=$BUNDLE/venv-$("$PY" -c "import platform; print(platform.python_version())")
  if [ ! -f "$BUNDLE/requirements.txt" ]; then
    echo "$PY lacks Keras or another dependency of keras-cifar, and $BUNDLE holds no wheels: run" \
      "\`bash gpu/gpu_prepare.sh\` on a machine with internet, then copy the checkout here again."
    return 1
  fi
  if [ ! -x "$venv/bin/python" ]; then
    "$PY" -m venv --without-pip "$venv" || return 1
    # The machine's packages after the environment's own (a .pth file, as --system-site-packages
    # would not see them when PY is itself a virtual environment).
    "$PY" -c "import sys; print('\n'.join(p for p in sys.path if p.endswith(('site-packages', 'dist-packages'))))" \
      > "$("$venv/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")/machine-packages.pth"
  fi
  # The bundle's pip, else the machine's (seen through the .pth file), installing into the environment.
  wheel=$(find "$BUNDLE/wheels" -maxdepth 1 -name 'pip-*.whl' 2>/dev/null | head -n 1)
  pip=("$venv/bin/python" -m pip)
  [ -z "$wheel" ] || pip=("$venv/bin/python" "$wheel/pip")
  if [ -s "$BUNDLE/requirements.txt" ]; then
    "${pip[@]}" install --quiet --disable-pip-version-check --no-index --no-cache-dir \
      --find-links "$BUNDLE/wheels" -r "$BUNDLE/requirements.txt" || {
      echo "Installing from $BUNDLE/wheels failed: were they prepared for this machine's Python" \
        "$("$PY" -c "import platform; print(platform.python_version(), platform.machine())")," \
        "from what it has (\`python3 gpu/gpu_bundle.py probe > machine.json\` here, then" \
        "\`bash gpu/gpu_prepare.sh machine.json\`)?"
      return 1
    }
  fi
  if ! "$venv/bin/python" -c "import torchvision" 2> /dev/null; then
    local torchvision
    torchvision=$(find "$BUNDLE/wheels" -maxdepth 1 -name 'torchvision-*.whl' | head -n 1)
    if [ -n "$torchvision" ]; then
      "${pip[@]}" install --quiet --disable-pip-version-check --no-index --no-deps \
        --no-cache-dir "$torchvision" || return 1
    fi
  fi
  "$venv/bin/python" -c "$needs" || return 1
  PY=$venv/bin/python
}
