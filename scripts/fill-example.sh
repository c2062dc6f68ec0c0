#!/usr/bin/env bash
# Set up (scripts/setup.sh) and run the main job: RealFill's `cpu` preset on the bundled example scene
# (a real stereo pair), writing the run folder runs/motorcycle-cpu and printing its evaluation.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
realfill fill examples/motorcycle --preset cpu --out runs/motorcycle-cpu "$@"
