#!/usr/bin/env bash
# Run HERE (a machine with pip and the real data) before a GPU session: puts what the lent GPU
# machine lacks into two git-ignored folders that the device tool carries (64 MiB in all):
#   .whl/       keras and the two of its dependencies that machine's image does not have
#               (namex, optree), as wheels for its Python 3.12 on x86-64 (about 3 MB)
#   .gpu_data/  the real CIFAR-10 archive (../shared/data/cifar10-jpeg.tar.gz, about 19 MB),
#               since ../shared does not travel
# Then: run `bash bench/gpu_session.sh` there with carry [".whl", ".gpu_data"].
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
DATA=${DATA:-../shared/data/cifar10-jpeg.tar.gz}
KERAS=$("$PY" -c "import importlib.metadata as m; print(m.version('keras'))")
rm -rf .whl && mkdir -p .whl .gpu_data
"$PY" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 -d .whl "keras==$KERAS" namex optree
cp "$DATA" .gpu_data/
du -sh .whl .gpu_data
