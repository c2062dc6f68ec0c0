#!/usr/bin/env bash
# The fast benchmark subset (everything in benchmarks/ not marked slow), gated by benchmarks/gate.py
# (docs/benchmarks.md, "How the gate decides"):
#  1. in-run ratios against their targets (training >= 1.3x, sampling >= 1.5x, ranking >= 1.8x,
#     resume < 0.2x). With --ci a ratio may land up to BENCH_RATIO_MARGIN (default 0.15, a fraction of the
#     target) short of it: the gate then catches regressions (a cache that stops caching drops its ratio
#     to about 1) and not the run-to-run spread (training, compiled, every core: 1.41-1.50x).
#  2. medians against the newest baseline in benchmarks/baseline/ that carries a calibration (whatever its
#     CPU model), each divided by the calibration kernel of its kind (benchmarks/calibration.py: a float32
#     matrix product, a streaming add) timed in the same run and in the saved one: a median more than
#     BENCH_MARGIN percent (default 30, with --ci 50) above the saved one, both relative to their machine's
#     speed, fails. Without such a baseline the gate says so and judges the ratios alone.
#  A benchmark that fails either way is measured again, alone, after BENCH_PAUSE seconds (default 30), up
#  to BENCH_ATTEMPTS runs in all (default 4): the gate fails only when it fails in every run, as a real
#  regression does and a neighbour that took a core for a minute or two does not. It ends with a summary
#  table (saved, now, calibration-adjusted, limit, in-run ratio, result, runs) and the machine's speed
#  against the baseline machine's.
#
#   scripts/bench.sh              run, gate on the targets and the newest calibrated baseline
#   scripts/bench.sh --ci         the same with CI's margins, without the rankers' peak-memory runs
#                                 (scripts/test.sh runs this)
#   scripts/bench.sh --save       run once and save a baseline with its calibration (commit benchmarks/baseline/)
#   scripts/bench.sh -k sampling  extra arguments go to pytest
set -euo pipefail
cd "$(dirname "$0")/.."
. .venv/bin/activate
MARGIN="${BENCH_MARGIN:-30}"
GATE=(--attempts "${BENCH_ATTEMPTS:-4}" --pause "${BENCH_PAUSE:-30}" --storage benchmarks/baseline)
ARGS=(-m "not slow" -q -s -p no:cacheprovider --benchmark-columns=median,min,rounds --benchmark-sort=name)
if [[ "${1:-}" == "--ci" ]]; then
    shift
    export REALFILL_BENCH_RATIO_MARGIN="${BENCH_RATIO_MARGIN:-0.15}"
    export REALFILL_BENCH_MEMORY="${REALFILL_BENCH_MEMORY:-0}"  # no fresh-process memory runs of the rankers
    MARGIN="${BENCH_MARGIN:-50}"  # another VM, maybe busier, after calibration: only gross slowdowns
elif [[ "${1:-}" == "--save" ]]; then
    shift
    # a file-name form of this CPU's model (as benchmarks/conftest.py records it), for the saved file's name
    SLUG="$(python -c 'import re, sys; sys.path.insert(0, "benchmarks"); import conftest
print(re.sub("[^a-z0-9]+", "-", conftest._cpu_model().lower()).strip("-") or "cpu")')"
    GATE+=(--save "$SLUG")
fi
exec python benchmarks/gate.py "${GATE[@]}" --margin "$MARGIN" benchmarks -- "${ARGS[@]}" "$@"
