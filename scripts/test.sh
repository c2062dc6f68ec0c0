#!/usr/bin/env bash
# Set up (scripts/setup.sh), run the whole test suite on the CPU, then the fast benchmark subset as a
# regression gate (scripts/bench.sh --ci: in-run ratios against their targets, with a margin, and
# medians against the newest calibrated baseline, relative to each machine's speed). SKIP_BENCH=1 runs the
# tests alone.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
python -m pytest -q -p no:cacheprovider "$@"
if [[ "${SKIP_BENCH:-0}" != "1" ]]; then
    bash scripts/bench.sh --ci
fi
