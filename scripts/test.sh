#!/usr/bin/env bash
# Set up (scripts/setup.sh), run the whole test suite on the CPU, then the fast benchmark subset as a
# regression gate (scripts/bench.sh --ci: in-run ratios against their targets, with a margin, and
# absolute medians against the baseline saved on this CPU model). SKIP_BENCH=1 runs the tests alone.
# --fast (first argument): the edit-test loop's tier, every test not marked slow, and no gate.
set -euo pipefail
cd "$(dirname "$0")/.."
FAST=0
if [[ "${1:-}" == "--fast" ]]; then
    FAST=1
    shift
fi
bash scripts/setup.sh
. .venv/bin/activate
if [[ "$FAST" == "1" ]]; then
    exec python -m pytest -q -p no:cacheprovider -m "not slow" "$@"
fi
python -m pytest -q -p no:cacheprovider "$@"
if [[ "${SKIP_BENCH:-0}" != "1" ]]; then
    bash scripts/bench.sh --ci
fi
