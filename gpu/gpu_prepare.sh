#!/usr/bin/env bash
# Prepares a GPU machine without internet (an air-gapped cluster node, a GPU box behind a
# firewall) that has Python and the torch built for its CUDA, but no Keras or TensorFlow. Run it
# here, on any machine with internet and pip, from the checkout; it writes one folder, BUNDLE
# (default .gpu_bundle, inside the checkout and ignored by git):
#   wheels/           keras-cifar's dependencies but torch and TensorFlow (Keras, NumPy, OpenCV,
#                     Matplotlib, click, PyYAML and theirs) for the GPU machine's Python and CPU,
#                     pip itself, and torchvision for its torch when TARGET_TORCH is given (only
#                     the GPU check's plain-PyTorch resnet18 uses it), about 100 MB
#   requirements.txt  what the GPU machine installs from wheels/ (python gpu/gpu_bundle.py)
#   data/             the CIFAR-10 copy (DATA: any local source `--data` reads), about 19 MB
# Then copy the whole checkout, bundle included, to the GPU machine and run there, from its root:
#   bash gpu/gpu_first.sh               the first look, about 7 minutes
#   bash gpu/gpu_session.sh airbench94  and muon, 95, check: longer runs
# Those install what the machine's Python lacks from wheels/ into a virtual environment in the
# bundle, which sees the machine's packages: nothing is downloaded there and torch is never replaced.
# Settings (environment variables), for the GPU machine:
#   TARGET_PYTHON  its Python version, major.minor (default 3.12)
#   TARGET_ARCH    its CPU: x86_64 (default) or aarch64
#   TARGET_TORCH   its torch version (python3 -c "import torch; print(torch.__version__)"), to add
#                  the matching torchvision when it has none (default: none added)
# and DATA (default ../shared/data/cifar10-jpeg.tar.gz), PYTHON (runs pip here; default
# .venv/bin/python when it exists, else python3).
set -euo pipefail
cd "$(dirname "$0")/.."
BUNDLE=${BUNDLE:-.gpu_bundle}
TARGET_PYTHON=${TARGET_PYTHON:-3.12}
TARGET_ARCH=${TARGET_ARCH:-x86_64}
DATA=${DATA:-../shared/data/cifar10-jpeg.tar.gz}
if [ -z "${PYTHON:-}" ]; then
  PYTHON=python3
  [ -x .venv/bin/python ] && PYTHON=.venv/bin/python
fi
[ -e "$DATA" ] || { echo "No data at DATA=$DATA: set DATA to your CIFAR-10 copy (an archive or folder)." >&2; exit 1; }

platforms=()
for tag in manylinux_2_28 manylinux_2_27 manylinux_2_17 manylinux2014; do
  platforms+=(--platform "${tag}_$TARGET_ARCH")
done
rm -rf "$BUNDLE/wheels" "$BUNDLE/data"
mkdir -p "$BUNDLE/wheels" "$BUNDLE/data"
"$PYTHON" gpu/gpu_bundle.py pyproject.toml > "$BUNDLE/requirements.txt"
"$PYTHON" -m pip download --quiet --disable-pip-version-check --only-binary=:all: --implementation cp \
  --python-version "$TARGET_PYTHON" "${platforms[@]}" -d "$BUNDLE/wheels" -r "$BUNDLE/requirements.txt" pip
if [ -n "${TARGET_TORCH:-}" ]; then
  # torchvision 0.(N+15).P goes with torch 2.N.P; --no-deps: its pin would fetch a torch.
  release=${TARGET_TORCH%%+*}
  minor=$(cut -d. -f2 <<< "$release")
  patch=$(cut -d. -f3 <<< "$release")
  "$PYTHON" -m pip download --quiet --disable-pip-version-check --only-binary=:all: --no-deps \
    --implementation cp --python-version "$TARGET_PYTHON" "${platforms[@]}" -d "$BUNDLE/wheels" \
    "torchvision==0.$((minor + 15)).${patch:-0}"
fi
cp -r "$DATA" "$BUNDLE/data/"
du -sh "$BUNDLE/wheels" "$BUNDLE/data"
echo "Copy this checkout, $BUNDLE included, to the GPU machine; there, from its root: bash gpu/gpu_first.sh"
