#!/usr/bin/env bash
# Gathers what an offline GPU machine (an air-gapped cluster node, a GPU box behind a firewall)
# lacks to run keras-cifar: it has Python and the torch built for its CUDA, perhaps more, but no
# internet. Run it here, on any machine with internet and pip, from the checkout:
#   bash gpu/gpu_prepare.sh [MACHINE_JSON]
# MACHINE_JSON is what the GPU machine's Python says it has, written there (a short batch job
# that needs nothing but the checkout) by
#   python3 gpu/gpu_bundle.py probe > machine.json
# Without it, HAVE may list what the machine has ("torch numpy==2.1.2 click ..."); with neither,
# everything keras-cifar may need is gathered, as for a machine with torch alone: about 110 MB with
# the data, against about 22 MB for a GPU image that lacks only Keras (keras, namex, optree).
# It writes one folder, BUNDLE (default .gpu_bundle, inside the checkout and ignored by git):
#   wheels/           the distributions the machine lacks (keras-cifar's dependencies but torch,
#                     TensorFlow, TFDS, TensorBoard and Matplotlib, and theirs), for its Python and
#                     CPU; pip when it has none; torchvision for its torch when TARGET_TORCH is given
#   requirements.txt  what the machine installs from wheels/ (empty: it lacks nothing)
#   data/             the CIFAR-10 copy (DATA: any local source `--data` reads), about 19 MB
# OpenCV decodes the JPEG copy of CIFAR-10 on the GPU machine (`fit --data`): a machine without
# cv2 gets opencv-python-headless, about 60 MB of the bundle.
# Then copy the checkout, bundle included, to the GPU machine and run there, from its root:
#   bash gpu/gpu_first.sh RESULTS       the first look, 9 minutes at most (see its header)
#   bash gpu/gpu_session.sh airbench94  and muon, 95, check: longer runs
# Those install what the machine's Python lacks from wheels/ into a virtual environment in the
# bundle, which sees the machine's packages: nothing is downloaded there and torch is never replaced.
# Settings (environment variables), for the GPU machine when no MACHINE_JSON tells them:
#   TARGET_PYTHON  its Python version, major.minor (default 3.12)
#   TARGET_ARCH    its CPU: x86_64 (default) or aarch64
#   TARGET_TORCH   its torch version (python3 -c "import torch; print(torch.__version__)"), to add
#                  the matching torchvision, about 8 MB (only the GPU check's plain-PyTorch resnet18
#                  uses it; default: none added)
# and DATA (default ../shared/data/cifar10-jpeg.tar.gz), PYTHON (runs pip here; default
# .venv/bin/python when it exists, else python3).
set -euo pipefail
if [ "${1:-}" = -h ] || [ "${1:-}" = --help ]; then
  sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
  exit
fi
[ $# -le 1 ] || { echo "usage: bash gpu/gpu_prepare.sh [MACHINE_JSON]  (--help says more)" >&2; exit 2; }
MACHINE=${1:+$(realpath "$1")}
cd "$(dirname "$0")/.."
BUNDLE=${BUNDLE:-.gpu_bundle}
DATA=${DATA:-../shared/data/cifar10-jpeg.tar.gz}
if [ -z "${PYTHON:-}" ]; then
  PYTHON=python3
  [ -x .venv/bin/python ] && PYTHON=.venv/bin/python
fi
[ -e "$DATA" ] || { echo "No data at DATA=$DATA: set DATA to your CIFAR-10 copy (an archive or folder)." >&2; exit 1; }
known=(--have "${HAVE:-}")
if [ -n "$MACHINE" ]; then
  [ -f "$MACHINE" ] || { echo "No file $1: pass what \`python3 gpu/gpu_bundle.py probe\` wrote on the GPU machine." >&2; exit 1; }
  read -r TARGET_PYTHON TARGET_ARCH < <("$PYTHON" gpu/gpu_bundle.py target "$MACHINE")
  known+=(--machine "$MACHINE")
fi
TARGET_PYTHON=${TARGET_PYTHON:-3.12}
TARGET_ARCH=${TARGET_ARCH:-x86_64}

target=(--only-binary=:all: --implementation cp --python-version "$TARGET_PYTHON")
for tag in manylinux_2_28 manylinux_2_27 manylinux_2_17 manylinux2014; do
  target+=(--platform "${tag}_$TARGET_ARCH")
done
pip=("$PYTHON" -m pip --disable-pip-version-check)
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
rm -rf "$BUNDLE/wheels" "$BUNDLE/data"
mkdir -p "$BUNDLE/wheels" "$BUNDLE/data"
"$PYTHON" gpu/gpu_bundle.py requirements pyproject.toml "${known[@]}" > "$BUNDLE/requirements.txt"
if [ -s "$BUNDLE/requirements.txt" ]; then
  # The whole resolution for the machine (metadata only, nothing installed), then the wheels of
  # the distributions it lacks, each alone (--no-deps).
  "${pip[@]}" install --quiet --dry-run --ignore-installed --target "$scratch/unused" --report "$scratch/resolved.json" \
    "${target[@]}" -r "$BUNDLE/requirements.txt"
  "$PYTHON" gpu/gpu_bundle.py missing "$scratch/resolved.json" "${known[@]}" --python "$TARGET_PYTHON" \
    --arch "$TARGET_ARCH" > "$scratch/wheels.txt"
  "${pip[@]}" download --quiet --no-deps "${target[@]}" -d "$BUNDLE/wheels" -r "$scratch/wheels.txt"
  # gpu/gpu_env.sh installs with the machine's pip when it has one.
  if ! "$PYTHON" gpu/gpu_bundle.py has pip "${known[@]}"; then
    "${pip[@]}" download --quiet --no-deps "${target[@]}" -d "$BUNDLE/wheels" pip
  fi
fi
if [ -n "${TARGET_TORCH:-}" ]; then
  # torchvision 0.(N+15).P goes with torch 2.N.P; --no-deps: its pin would fetch a torch.
  release=${TARGET_TORCH%%+*}
  minor=$(cut -d. -f2 <<< "$release")
  patch=$(cut -d. -f3 <<< "$release")
  "${pip[@]}" download --quiet --no-deps "${target[@]}" -d "$BUNDLE/wheels" "torchvision==0.$((minor + 15)).${patch:-0}"
fi
cp -r "$DATA" "$BUNDLE/data/"
echo "The GPU machine (Python $TARGET_PYTHON, $TARGET_ARCH) gets:"
sed 's/^/  /' "$BUNDLE/requirements.txt"
[ -s "$BUNDLE/requirements.txt" ] || echo "  nothing to install"
du -sh "$BUNDLE/wheels" "$BUNDLE/data"; du -sh "$BUNDLE"
echo "Copy this checkout, $BUNDLE included, to the GPU machine; there, from its root: bash gpu/gpu_first.sh RESULTS"
