#!/usr/bin/env bash
# Packaging check (run by .ci/run after the tests): build the sdist and the wheel the way
# `pip install .` does, install the wheel non-editable into a fresh virtual environment, and from
# a folder outside the checkout train `keras-cifar fit --model cnn` for one epoch on a few real
# images. The run's resolved config must equal configs/cnn.yaml for every key the file sets, and
# every model's config must resolve from the installed package (never from RunConfig's defaults).
#
# The fresh environment reuses the dependencies already installed in .venv (installing torch and
# TensorFlow again would take most of CI's time): a .pth file lists .venv's site-packages. .pth
# files inside that folder are not processed, so .venv's editable keras_cifar stays inactive; the
# check asserts that keras_cifar is imported from the fresh environment.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
PY="$REPO/.venv/bin/python"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

DATA=${KERAS_CIFAR_DATA:-$REPO/../shared/data/cifar10-jpeg.tar.gz}
[ -f "${DATA:-}" ] || { echo "wheel check: no real CIFAR-10 archive (set KERAS_CIFAR_DATA)" >&2; exit 1; }

echo "== source: the checkout's files (tracked and untracked, not ignored), nothing built"
mkdir "$WORK/src"
(cd "$REPO" && git ls-files -z --cached --others --exclude-standard | tar --null --ignore-failed-read -T - -cf - 2>/dev/null) | tar -xf - -C "$WORK/src"

echo "== sdist and wheel"
(cd "$WORK/src" && "$PY" -c "from setuptools import build_meta; build_meta.build_sdist('$WORK/sdist')" >/dev/null)
"$PY" -m pip wheel --quiet --no-deps --no-build-isolation -w "$WORK/dist" "$WORK/src"
"$PY" -m pip wheel --quiet --no-deps --no-build-isolation -w "$WORK/dist-from-sdist" "$WORK"/sdist/*.tar.gz
"$PY" "$REPO/.ci/check_installed.py" archives "$REPO" "$WORK"/dist/*.whl "$WORK"/dist-from-sdist/*.whl "$WORK"/sdist/*.tar.gz

echo "== fresh venv, wheel installed non-editable"
"$PY" -m venv "$WORK/venv"
SITE=$("$WORK/venv/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
DEPS=$("$PY" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
echo "$DEPS" > "$SITE/keras_cifar_ci_deps.pth"
"$WORK/venv/bin/python" -m pip install --quiet --no-deps --no-index "$WORK"/dist/*.whl

echo "== keras-cifar fit from outside the checkout"
mkdir "$WORK/outside"
"$WORK/venv/bin/python" "$REPO/.ci/check_installed.py" extract "$DATA" "$WORK/images"
cd "$WORK/outside"
env -u KERAS_CIFAR_CONFIGS -u PYTHONPATH "$WORK/venv/bin/keras-cifar" fit --model cnn --epochs 1 \
  --train-images 64 --eval-images 64 --data "$WORK/images" --data-dir "$WORK/tfds" --log-dir "$WORK/logs"
env -u KERAS_CIFAR_CONFIGS -u PYTHONPATH "$WORK/venv/bin/python" "$REPO/.ci/check_installed.py" run \
  "$REPO" "$WORK/venv" "$WORK/logs"
echo "wheel check: OK"
