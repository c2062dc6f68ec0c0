#!/usr/bin/env bash
# The fast benchmark subset (everything in benchmarks/ not marked slow), gated two ways:
#  1. in-run ratios: each benchmark times its baseline in the same run and asserts its target ratio
#     (training >= 1.3x, sampling >= 1.5x, ranking >= 1.8x, resume < 0.2x);
#  2. absolute medians against the saved baseline in benchmarks/baseline/ (pytest-benchmark's
#     --benchmark-compare-fail), failing on a slowdown of more than BENCH_MARGIN percent (default 30:
#     absolute medians on the shared 2-core machine moved up to 6% between runs at load 2-4, and double
#     at load 9).
#
#   scripts/bench.sh              run and compare against the latest saved baseline
#   scripts/bench.sh --save       run and save a new baseline (commit benchmarks/baseline/)
#   scripts/bench.sh -k sampling  extra arguments go to pytest
set -euo pipefail
cd "$(dirname "$0")/.."
. .venv/bin/activate
MARGIN="${BENCH_MARGIN:-30}"
ARGS=(benchmarks -m "not slow" -q -s -p no:cacheprovider --benchmark-storage=file://benchmarks/baseline
      --benchmark-columns=median,min,rounds --benchmark-sort=name)
if [[ "${1:-}" == "--save" ]]; then
    shift
    exec python -m pytest "${ARGS[@]}" --benchmark-save=cpu "$@"
fi
if compgen -G "benchmarks/baseline/*/*.json" > /dev/null; then
    ARGS+=(--benchmark-compare --benchmark-compare-fail="median:${MARGIN}%")
else
    echo "bench.sh: no saved baseline in benchmarks/baseline/ yet; run scripts/bench.sh --save" >&2
fi
exec python -m pytest "${ARGS[@]}" "$@"
