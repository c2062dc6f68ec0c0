#!/usr/bin/env bash
# The fast benchmark subset (everything in benchmarks/ not marked slow), gated two ways:
#  1. in-run ratios against their targets (training >= 1.3x, sampling >= 1.5x, ranking >= 1.8x,
#     resume < 0.2x). With --ci a ratio may land up to BENCH_RATIO_MARGIN (default 0.15, a fraction of the
#     target) short of it: the gate then catches regressions (a cache that stops caching drops its ratio
#     to about 1) and not the run-to-run spread (training, compiled, every core: 1.41-1.50x).
#  2. absolute medians against the newest baseline saved on this CPU model in benchmarks/baseline/
#     (pytest-benchmark's --benchmark-compare-fail), failing on a slowdown of more than BENCH_MARGIN
#     percent (default 30, with --ci 50: medians moved up to 6% between runs at load 2-4, the 60 ms
#     warp ranking by 16% on an idle machine, and doubled at load 9).
#     Absolute times from another CPU model say nothing about this one: without a baseline of this
#     model the script says so and gates on the ratios alone.
#  A benchmark that fails either way is measured again, alone, after BENCH_PAUSE seconds (default 30), up
#  to BENCH_ATTEMPTS runs in all (default 4; benchmarks/gate.py): the gate fails only when it fails in
#  every run, as a real regression does and a neighbour that took a core for a minute or two does not.
#
#   scripts/bench.sh              run, gate on the targets and this CPU's saved baseline
#   scripts/bench.sh --ci         the same with CI's margins, without the rankers' peak-memory runs
#                                 (scripts/test.sh runs this)
#   scripts/bench.sh --save       run and save a baseline for this CPU model (commit benchmarks/baseline/)
#   scripts/bench.sh -k sampling  extra arguments go to pytest
set -euo pipefail
cd "$(dirname "$0")/.."
. .venv/bin/activate
MARGIN="${BENCH_MARGIN:-30}"
ARGS=(-m "not slow" -q -s -p no:cacheprovider --benchmark-storage=file://benchmarks/baseline
      --benchmark-columns=median,min,rounds --benchmark-sort=name)
if [[ "${1:-}" == "--ci" ]]; then
    shift
    export REALFILL_BENCH_RATIO_MARGIN="${BENCH_RATIO_MARGIN:-0.15}"
    export REALFILL_BENCH_MEMORY="${REALFILL_BENCH_MEMORY:-0}"  # no fresh-process memory runs of the rankers
    MARGIN="${BENCH_MARGIN:-50}"  # another VM of the same CPU model, maybe busier: only gross slowdowns
fi
# this CPU's model (as benchmarks/conftest.py records it), a file-name form of it, and the number of the
# newest baseline saved on this model (empty when there is none), tab-separated
IFS=$'\t' read -r MODEL SLUG BASELINE < <(python - <<'EOF'
import glob, json, os, re, sys
sys.path.insert(0, "benchmarks")
import conftest
model = conftest._cpu_model()
runs = []
for path in glob.glob("benchmarks/baseline/*/*.json"):
    with open(path) as f:
        if json.load(f).get("machine_info", {}).get("cpu_model") == model:
            runs.append(os.path.basename(path).split("_", 1)[0])
slug = re.sub("[^a-z0-9]+", "-", model.lower()).strip("-") or "cpu"
print(model, slug, max(runs) if runs else "", sep="\t")
EOF
)
if [[ "${1:-}" == "--save" ]]; then
    shift
    exec python -m pytest benchmarks "${ARGS[@]}" --benchmark-save="$SLUG" "$@"
fi
if [[ -n "$BASELINE" ]]; then
    ARGS+=(--benchmark-compare="$BASELINE" --benchmark-compare-fail="median:${MARGIN}%")
else
    echo "bench.sh: no baseline saved on this CPU model ($MODEL) in benchmarks/baseline/; gating on the" \
         "in-run ratios only (scripts/bench.sh --save makes one)" >&2
fi
exec python benchmarks/gate.py --attempts "${BENCH_ATTEMPTS:-4}" --pause "${BENCH_PAUSE:-30}" benchmarks -- "${ARGS[@]}" "$@"
