#!/usr/bin/env bash
# Set up (scripts/setup.sh), run the whole test suite on the CPU, then the fast benchmark subset as a
# regression gate (scripts/bench.sh --ci: in-run ratios against their targets, with a margin, and
# medians against the newest calibrated baseline, relative to each machine's speed). SKIP_BENCH=1 runs the
# tests alone. --fast (first argument): the edit-test loop's tier, every test not marked slow, and no gate.
set -euo pipefail
cd "$(dirname "$0")/.."
FAST=0
if [[ "${1:-}" == "--fast" ]]; then
    FAST=1
    shift
fi
bash scripts/setup.sh
# tests/test_report.py opens report.html in headless Chromium (Debian's package, no browser download); where
# none can be had they skip with the reason
if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
    SUDO=""
    if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then SUDO="sudo -n"; fi
    { $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium; } \
        >/dev/null 2>&1 || echo "note: chromium could not be installed; the browser tests will skip" >&2
fi
. .venv/bin/activate
if [[ "$FAST" == "1" ]]; then
    exec python -m pytest -q -p no:cacheprovider -m "not slow" "$@"
fi
python -m pytest -q -p no:cacheprovider "$@"
if [[ "${SKIP_BENCH:-0}" != "1" ]]; then
    bash scripts/bench.sh --ci
fi
