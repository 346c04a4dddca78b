#!/usr/bin/env bash
# Installs into the Python given (default: python3) the torchvision release built for its installed
# torch (torch 2.N pairs with torchvision 0.N+15), with --no-deps so that the torch stays as it is;
# the tests that need torchvision skip, saying why, when none is published for that torch yet.
# Usage: bash .ci/torchvision.sh [PYTHON]
set -euo pipefail
PYTHON=${1:-python3}
wanted=$("$PYTHON" -c 'import torch; major, minor = torch.__version__.split(".")[:2]; print(f"0.{int(minor) + 15}.*" if major == "2" else "")')
if [ -z "$wanted" ]; then
  echo "torchvision.sh: no known torchvision release for this torch; the tests that need it will skip." >&2
  exit 0
fi
if "$PYTHON" -m pip install --quiet --no-deps "torchvision==$wanted"; then
  "$PYTHON" -c 'import torch, torchvision; print(f"torchvision {torchvision.__version__} for torch {torch.__version__}")'
else
  echo "torchvision.sh: no torchvision==$wanted published for this torch; the tests that need it will skip." >&2
fi
